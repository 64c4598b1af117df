from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import (
    DEFAULT_ALGORITHMS,
    Config,
    ConfigError,
    ConfigFileError,
    expiry_grace,
    load_config,
    parse_byte_size,
    parse_config,
    parse_duration,
    parse_listen,
    policy_digest,
    read_target_password,
    target_allowed,
    targets_allowed,
)

BASE = Path("/etc/gateway")

AUTH = """
[auth]
issuer = "https://idp.example.com/"
audience = "db-gateway"
jwks_file = "jwks.json"
"""

TARGET = """
[[targets]]
name = "app-pg"
protocol = "postgres"
listen = "127.0.0.1:6432"
host = "db.internal"
port = 5432
database = "app"
user = "gateway"
password_env = "APP_PG_PASSWORD"
"""

POLICY = """
[[policies]]
name = "contractors"
groups = ["contractors"]
targets = ["app-pg"]
allow = ["read"]
"""

MINIMAL = AUTH + TARGET


def parse(text: str) -> Config:
    return parse_config(textwrap.dedent(text), BASE)


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value.errors


# ------------------------------------------------------------------ valid configs


def test_minimal_config_gets_documented_defaults() -> None:
    config = parse(MINIMAL)
    g = config.gateway
    assert g.state_dir == "/etc/gateway/.gateway"
    assert g.session_dir == "/etc/gateway/sessions"
    assert g.max_message_size == 64 * 1024 * 1024
    assert (g.login_timeout, g.shutdown_grace, g.token_expiry_grace) == (15.0, 30.0, 0.0)
    assert (g.log_level, g.log_format) == ("info", "json")
    assert config.tls.cert_file is None and config.tls.key_file is None
    assert config.tls.allow_plaintext is False and config.tls.min_version == "1.2"
    a = config.auth
    assert a.jwks_file == "/etc/gateway/jwks.json" and a.jwks_url is None
    assert (a.user_claim, a.groups_claim) == ("sub", "groups")
    assert a.algorithms == list(DEFAULT_ALGORITHMS)
    assert (a.leeway, a.jwks_cache_ttl, a.jwks_min_refetch_interval) == (30.0, 600.0, 30.0)
    assert a.max_token_size == 16384
    assert a.audiences == ["db-gateway"]
    r = config.recording
    assert r.enabled and r.fsync_interval == 1.0 and r.on_failure == "refuse"
    assert r.signing_key_file is None and r.max_buffer == 8 * 1024 * 1024
    (t,) = config.targets
    assert (t.listen_host, t.listen_port) == ("127.0.0.1", 6432)
    assert t.tls == "prefer" and t.connect_timeout == 10.0 and t.password_file is None
    assert config.policies == []


def test_full_config_round_trip() -> None:
    config = parse(
        """
        [gateway]
        state_dir = "/var/lib/gateway"
        session_dir = "../recordings"
        max_message_size = 1048576
        login_timeout = "2m"
        shutdown_grace = 5
        token_expiry_grace = "500ms"
        log_level = "debug"
        log_format = "text"

        [tls]
        cert_file = "tls/server.crt"
        key_file = "tls/server.key"
        min_version = "1.3"

        [auth]
        issuer = "https://idp.example.com"
        audience = ["db-gateway", "other"]
        user_claim = "email"
        algorithms = ["ES256"]
        leeway = "1m"

        [admin]
        listen = "127.0.0.1:8081"
        groups = ["gateway-admins", "sre"]

        [approvals]
        webhook_url = "https://hooks.example.com/approvals"
        webhook_secret_env = "HOOK_SECRET"

        [recording]
        enabled = false
        on_failure = "continue"
        signing_key_file = "recording.pem"

        [[targets]]
        name = "app-pg"
        protocol = "postgres"
        listen = "[::1]:6432"
        host = "db"
        port = 5432
        database = "app"
        user = "gw"
        password_file = "secrets/pg"
        tls = "verify-full"
        tls_ca_file = "ca.pem"
        tls_server_name = "db.internal"
        connect_timeout = "3s"

        [[policies]]
        name = "all"
        groups = ["dba"]
        targets = ["*"]
        allow = ["*"]
        deny = ["drop_database", "no-payroll"]
        review = ["ddl"]
        record_rows = 0
        max_rows = 100
        max_bytes = "10MB"
        session_max_bytes = "1GiB"
        window_max_rows = 5000
        window = "1h"
        on_limit = "approval"
        approvers = ["dba-leads"]
        approval_timeout = "2m"

        [[policies.rules]]
        name = "no-payroll"
        tables = ["hr.*"]
        """
    )
    assert config.gateway.state_dir == "/var/lib/gateway"
    assert config.gateway.session_dir == "/etc/recordings"
    assert config.gateway.login_timeout == 120.0
    assert config.gateway.token_expiry_grace == 0.5
    assert config.tls.cert_file == "/etc/gateway/tls/server.crt"
    assert config.auth.audiences == ["db-gateway", "other"]
    assert config.auth.leeway == 60.0
    assert config.auth.discovery_url == "https://idp.example.com/.well-known/openid-configuration"
    assert config.recording.signing_key_file == "/etc/gateway/recording.pem"
    target = config.targets[0]
    assert (target.listen_host, target.listen_port) == ("::1", 6432)
    assert target.password_file == "/etc/gateway/secrets/pg"
    assert target.tls_ca_file == "/etc/gateway/ca.pem"
    assert target.connect_timeout == 3.0
    assert config.policies[0].record_rows == 0
    policy = config.policies[0]
    assert (policy.max_rows, policy.max_bytes, policy.session_max_bytes) == (100, 10**7, 1 << 30)
    assert (policy.window_max_rows, policy.window, policy.approval_timeout) == (5000, 3600.0, 120.0)
    assert (policy.on_limit, policy.approvers) == ("approval", ["dba-leads"])
    assert config.admin is not None and config.admin.groups == ["gateway-admins", "sre"]
    assert config.approvals.webhook_secret_env == "HOOK_SECRET"


def test_load_config_resolves_paths_against_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    file = tmp_path / "conf" / "gateway.toml"
    file.write_text(MINIMAL)
    monkeypatch.chdir(tmp_path)  # a relative argument and a different working directory
    config = load_config("conf/gateway.toml")
    assert config.auth.jwks_file == str(tmp_path / "conf" / "jwks.json")
    assert config.gateway.state_dir == str(tmp_path / "conf" / ".gateway")


def test_discovery_issuer_and_loopback_http_urls() -> None:
    no_jwks = MINIMAL.replace('jwks_file = "jwks.json"', "")
    assert parse(no_jwks).auth.jwks_file is None
    local = AUTH.replace('jwks_file = "jwks.json"', 'jwks_url = "http://127.0.0.1:8080/jwks"')
    assert parse(local + TARGET).auth.jwks_url == "http://127.0.0.1:8080/jwks"


# ------------------------------------------------------------------ error reporting


def test_every_error_is_reported_with_its_key_path() -> None:
    found = errors(
        """
        [gateway]
        max_message_size = 12
        log_level = "verbose"

        [tls]
        min_version = 1.3

        [auth]
        issuer = "https://idp.example.com/"
        audience = ["a", 3]
        jwks_fil = "x"

        [[targets]]
        name = "one"
        protocol = "postgres"
        listen = "127.0.0.1:6432"
        host = "h"
        port = "5432"
        database = "d"
        user = "u"

        [[targets]]
        name = "two"
        protocol = "oracle"
        listen = "127.0.0.1:6433"
        host = "h"
        port = 70000
        user = "u"
        """
    )
    assert found == [
        "gateway.max_message_size: must be >= 1024, got 12",
        'gateway.log_level: expected one of "debug", "info", "warning", "error", got "verbose"',
        'tls.min_version: expected one of "1.2", "1.3", got float (quote it: "1.3")',
        "auth.audience[1]: expected str, got int",
        'auth.jwks_fil: unknown key; did you mean "jwks_file"?',
        "targets[0].port: expected int, got str",
        'targets[1].protocol: expected one of "postgres", "mysql", got "oracle"',
        "targets[1].port: must be <= 65535, got 70000",
        "targets[1].database: required key is missing",
    ]


def test_str_of_config_error_lists_every_error() -> None:
    err = ConfigError(["a: one", "b: two"])
    assert str(err) == "a: one\nb: two"


def test_missing_required_sections_and_empty_targets() -> None:
    assert errors("") == ["auth: required key is missing", "targets: required key is missing"]
    assert errors("targets = []\n" + AUTH) == ["targets: must not be empty"]


def test_wrong_table_types() -> None:
    assert errors('gateway = "x"\n' + MINIMAL) == ["gateway: expected table, got str"]
    assert errors('targets = ["x"]\n' + AUTH) == ["targets[0]: expected table, got str"]


def test_limit_and_approval_errors_name_their_keys() -> None:
    assert errors(MINIMAL + POLICY + 'on_limit = "approval"\nmax_rows = 5\n') == [
        'policies[0].approvers: on_limit = "approval" needs approvers: the groups whose '
        "members may approve"
    ]
    assert errors(MINIMAL + POLICY + 'review = ["read"]\n') == [
        "policies[0].approvers: review entries need approvers: the groups whose members "
        "may approve a statement"
    ]
    assert errors(MINIMAL + POLICY + 'approvers = ["dba"]\n') == [
        'policies[0].approvers: only used with review entries or with on_limit = "approval" '
        "and a limit",
        "policies[0].approvers: approvers decide through the admin API: add an [admin] section",
    ]
    assert errors(MINIMAL + POLICY + 'max_bytes = "ten"\nmax_rows = 0\n') == [
        'policies[0].max_bytes: expected a size (bytes, or a string like "512KB", "10MB", '
        '"1GiB"), got "ten"',
        "policies[0].max_rows: must be >= 1, got 0",
    ]
    # Keys that mean nothing alone would let an operator believe a limit exists.
    assert errors(MINIMAL + POLICY + 'on_limit = "truncate"\nwindow = "5m"\n') == [
        "policies[0].on_limit: only used with a limit (max_rows, max_bytes, ...)",
        "policies[0].window: only used with window_max_rows or window_max_bytes",
    ]
    assert errors(MINIMAL + POLICY + 'max_rows = 5\nwindow = "5m"\napproval_timeout = "1m"\n') == [
        "policies[0].window: only used with window_max_rows or window_max_bytes",
        "policies[0].approval_timeout: only used with review entries or with on_limit = "
        '"approval" and a limit',
    ]
    assert parse(MINIMAL + POLICY + 'window_max_rows = 5\nwindow = "5m"\non_limit = "truncate"\n')
    assert errors(MINIMAL + '[approvals]\nwebhook_url = "http://hooks.example.com/x"\n') == [
        "approvals.webhook_url: webhook_url must be an https:// URL (plain http only for "
        "loopback hosts)"
    ]
    assert errors(MINIMAL + '[admin]\nlisten = "nowhere"\n') == [
        "admin.listen: expected \"host:port\", got 'nowhere'"
    ]


@pytest.mark.parametrize(
    ("text", "size"),
    [("512", 512), ("512KB", 512_000), ("2 MiB", 2 << 20), ("1GB", 10**9), ("3TiB", 3 << 40)],
)
def test_byte_sizes(text: str, size: int) -> None:
    assert parse_byte_size(text) == size
    assert parse_byte_size(size) == size


def test_masks_are_read() -> None:
    config = parse(
        MINIMAL
        + POLICY
        + 'on_unmaskable = "deny"\n'
        + '[[policies.masks]]\ncolumns = ["customers.ssn", "billing.*.iban"]\nstyle = "last4"\n'
        + '[[policies.masks]]\ndetectors = ["email", "emp"]\nstyle = "keep_last"\nkeep_last = 2\n'
        + '[[policies.detectors]]\nname = "emp"\npattern = "EMP-[0-9]{6}"\nvalidator = "luhn"\n'
    )
    policy = config.policies[0]
    assert policy.masks[0].columns == ["customers.ssn", "billing.*.iban"]
    assert policy.masks[1].keep_last == 2
    assert policy.detectors[0].validator == "luhn"
    assert policy.on_unmaskable == "deny" and policy.on_unknown_lineage == "mask"


@pytest.mark.parametrize(
    ("mask", "expected"),
    [
        ('columns = ["ssn"]', 'policies[0].masks[0].columns[0]: expected "table.column"'),
        ('style = "redact"', "policies[0].masks[0]: a mask needs columns or detectors"),
        ('detectors = ["cc"]', 'policies[0].masks[0].detectors[0]: unknown detector "cc"'),
        (
            'columns = ["a.b"]\nstyle = "keep_last"',
            'policies[0].masks[0].keep_last: required with style = "keep_last"',
        ),
        ('columns = ["a.b"]\nstyle = "fixed"', "policies[0].masks[0].value: required with style"),
        ('columns = ["a.b"]\nvalue = "x"', "policies[0].masks[0].value: only used with style"),
        (
            'columns = ["a.b"]\nstyle = "hash"',
            'policies[0].masks[0].style: style "hash" needs a key',
        ),
        ('columns = ["a.b"]\nstyle = "blur"', "policies[0].masks[0].style: expected one of"),
    ],
)
def test_mask_errors_name_the_key(mask: str, expected: str) -> None:
    found = errors(MINIMAL + POLICY + "[[policies.masks]]\n" + mask + "\n")
    assert len(found) == 1 and found[0].startswith(expected), found


def test_custom_detector_errors() -> None:
    found = errors(
        MINIMAL
        + POLICY
        + '[[policies.detectors]]\nname = "bad"\npattern = "([a-z"\n'
        + '[[policies.detectors]]\nname = "email"\npattern = "x"\n'
    )
    assert len(found) == 2
    assert found[0].startswith("policies[0].detectors[0].pattern: ")
    assert found[1].startswith('policies[0].detectors[1].name: "email" is a built-in')


def test_hash_key_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.config import read_mask_hash_key

    found = errors(MINIMAL + '[masking]\nhash_key_env = "K"\nhash_key_file = "k.key"\n')
    assert found == ["masking.hash_key_file: set at most one of hash_key_env and hash_key_file"]
    config = parse(MINIMAL + '[masking]\nhash_key_env = "GW_TEST_MASK_KEY"\n')
    monkeypatch.setenv("GW_TEST_MASK_KEY", "0123456789abcdef")
    assert read_mask_hash_key(config) == b"0123456789abcdef"
    monkeypatch.delenv("GW_TEST_MASK_KEY")
    with pytest.raises(ConfigError, match="GW_TEST_MASK_KEY is not set"):
        read_mask_hash_key(config)


def test_mysql_targets_are_accepted() -> None:
    config = parse(AUTH + TARGET.replace('"postgres"', '"mysql"'))
    assert config.targets[0].protocol == "mysql"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("none", '"none" means unsigned tokens'),
        ("HS256", "HS256 is a shared-secret (HMAC) algorithm"),
        ("hs512", "hs512 is a shared-secret (HMAC) algorithm"),
        ("ES256K", 'unsupported algorithm "ES256K"'),
    ],
)
def test_algorithms_are_checked(algorithm: str, expected: str) -> None:
    text = AUTH + f'algorithms = ["RS256", "{algorithm}"]\n' + TARGET
    (found,) = errors(text)
    assert found.startswith(f"auth.algorithms[1]: {expected}")


# ------------------------------------------------------------------ cross-field checks


def test_tls_cert_and_key_go_together() -> None:
    assert errors('[tls]\ncert_file = "c.pem"\n' + MINIMAL) == [
        "tls.key_file: required when cert_file is set"
    ]
    assert errors('[tls]\nkey_file = "k.pem"\n' + MINIMAL) == [
        "tls.cert_file: required when key_file is set"
    ]


def test_jwks_sources_are_exclusive_and_urls_must_be_https() -> None:
    both = AUTH + 'jwks_url = "https://idp.example.com/jwks"\n' + TARGET
    assert errors(both) == ["auth.jwks_url: set at most one of jwks_file and jwks_url"]
    plain = AUTH.replace('jwks_file = "jwks.json"', 'jwks_url = "http://idp.example.com/jwks"')
    (found,) = errors(plain + TARGET)
    assert found.startswith("auth.jwks_url: jwks_url must be an https:// URL")
    discovery = AUTH.replace('jwks_file = "jwks.json"', "").replace("https://idp", "idp")
    (found,) = errors(discovery + TARGET)
    assert found.startswith("auth.issuer: without jwks_file or jwks_url the issuer is used")


def test_target_cross_field_checks() -> None:
    text = AUTH + TARGET.replace(
        'password_env = "APP_PG_PASSWORD"',
        'password_env = "X"\npassword_file = "p"\ntls = "require"\ntls_ca_file = "ca.pem"\n'
        'tls_server_name = "db"',
    ).replace('listen = "127.0.0.1:6432"', 'listen = "::1:6432"')
    assert errors(text) == [
        'targets[0].listen: IPv6 addresses must be written in brackets: "[::1]:6432"',
        "targets[0].password_file: set at most one of password_env and password_file",
        'targets[0].tls_ca_file: only used with tls = "verify-full"; set that or remove this key',
        'targets[0].tls_server_name: only used with tls = "verify-full"; set that or remove '
        "this key",
    ]


def test_target_without_password_is_allowed() -> None:
    config = parse(AUTH + TARGET.replace('password_env = "APP_PG_PASSWORD"', ""))
    assert read_target_password(config.targets[0]) is None


def test_names_listen_addresses_and_references() -> None:
    second = TARGET.replace('"127.0.0.1:6432"', '"127.0.0.1:6432"').replace("5432", "5433")
    port_zero = TARGET.replace('"app-pg"', '"z1"').replace("6432", "0")
    port_zero_2 = TARGET.replace('"app-pg"', '"z2"').replace("6432", "0")
    found = errors(
        AUTH
        + TARGET
        + second
        + port_zero
        + port_zero_2
        + POLICY
        + POLICY.replace('["app-pg"]', '["app-pg", "nope", "*"]')
    )
    assert found == [
        'targets[1].name: duplicate name "app-pg" (also targets[0])',
        "targets[1].listen: 127.0.0.1:6432 is already used by targets[0]",
        'policies[1].name: duplicate name "contractors" (also policies[0])',
        'policies[1].targets[1]: no target is named "nope"',
    ]


def test_cross_checks_are_reported_together_with_type_errors() -> None:
    broken = TARGET.replace("port = 5432", 'port = "x"')
    found = errors(AUTH + broken + broken + POLICY)
    assert found == [
        "targets[0].port: expected int, got str",
        "targets[1].port: expected int, got str",
        'targets[1].name: duplicate name "app-pg" (also targets[0])',
        "targets[1].listen: 127.0.0.1:6432 is already used by targets[0]",
    ]  # and no false "no target is named" for the policy


def test_bad_names_and_empty_values() -> None:
    text = AUTH + TARGET.replace('"app-pg"', '"app pg"').replace('"app"', '""')
    text += '[[policies]]\nname = "p"\ngroups = []\ntargets = ["*"]\nrecord_rows = -1\nallow = []\n'
    assert errors(text) == [
        "targets[0].database: must not be empty",
        "targets[0].name: use letters, digits, '_', '.' and '-' only, starting with a letter "
        "or digit",
        "policies[0].groups: must not be empty",
        "policies[0].record_rows: must be >= 0, got -1",
    ]


# ------------------------------------------------------------------ durations and listen


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (15, 15.0),
        (0.25, 0.25),
        ("15s", 15.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("500ms", 0.5),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("1d", 86400.0),
        (" 3s ", 3.0),
    ],
)
def test_parse_duration(value: str | float, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["15", "", "s", "-1s", "1 s", "1w", "1.s", -1, True])
def test_parse_duration_rejects(value: str | float) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


def test_bad_duration_in_config_names_the_key() -> None:
    (found,) = errors('[gateway]\nlogin_timeout = "soon"\n' + MINIMAL)
    assert found == (
        'gateway.login_timeout: expected a duration (seconds, or a string like "15s", "2m", '
        '"1h", "500ms"), got "soon"'
    )
    (found,) = errors('[gateway]\nlogin_timeout = "0s"\n' + MINIMAL)
    assert found == "gateway.login_timeout: must be > 0, got 0"
    (found,) = errors("[gateway]\nshutdown_grace = -5\n" + MINIMAL)
    assert found == "gateway.shutdown_grace: duration must be a finite number >= 0, got -5"
    (found,) = errors("[gateway]\nshutdown_grace = true\n" + MINIMAL)
    assert found.endswith("got bool")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:6432", ("127.0.0.1", 6432)), ("[::]:0", ("::", 0)), ("db:1", ("db", 1))],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["6432", ":6432", "h:", "h:x", "h:70000", "[zz]:1", "::1:5"])
def test_parse_listen_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(text)


# ------------------------------------------------------------------ passwords


def test_password_from_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_PG_PASSWORD", "s3cret-env")
    assert read_target_password(parse(MINIMAL).targets[0]) == "s3cret-env"
    (tmp_path / "pw").write_text("s3cret-file\n")
    text = AUTH + TARGET.replace('password_env = "APP_PG_PASSWORD"', 'password_file = "pw"')
    config = parse_config(text, tmp_path)
    assert read_target_password(config.targets[0]) == "s3cret-file"


def test_password_errors_name_the_key_and_never_the_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("APP_PG_PASSWORD", raising=False)
    with pytest.raises(ConfigError) as info:
        read_target_password(parse(MINIMAL).targets[0])
    assert info.value.errors == [
        'targets[name="app-pg"].password_env: environment variable APP_PG_PASSWORD is not set'
    ]
    monkeypatch.setenv("APP_PG_PASSWORD", "")
    with pytest.raises(ConfigError, match="is empty"):
        read_target_password(parse(MINIMAL).targets[0])

    text = AUTH + TARGET.replace('password_env = "APP_PG_PASSWORD"', 'password_file = "pw"')
    target = parse_config(text, tmp_path).targets[0]
    with pytest.raises(ConfigError, match=r'targets\[name="app-pg"\]\.password_file: cannot read'):
        read_target_password(target)
    (tmp_path / "pw").write_bytes(b"\xffs3cret-bytes")
    with pytest.raises(ConfigError) as info:
        read_target_password(target)
    assert "s3cret" not in str(info.value)
    (tmp_path / "pw").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        read_target_password(target)


# ------------------------------------------------------------------ policies helpers


def test_targets_allowed_and_digest() -> None:
    other = TARGET.replace('"app-pg"', '"reports"').replace("6432", "6433")
    policies = POLICY + (
        '[[policies]]\nname = "dba"\ngroups = ["dba", "ops"]\ntargets = ["*"]\nallow = ["*"]\n'
    )
    config = parse(AUTH + TARGET + other + policies)
    assert targets_allowed(config, ["contractors"]) == {"app-pg"}
    assert targets_allowed(config, ["ops", "x"]) == {"app-pg", "reports"}
    assert targets_allowed(config, []) == set()
    assert target_allowed(config, "app-pg", ["contractors"])
    assert not target_allowed(config, "reports", ["contractors"])
    assert not target_allowed(config, "missing", ["dba"])

    digest = policy_digest(config)
    assert len(digest) == 64 and digest == policy_digest(parse(AUTH + TARGET + other + policies))
    changed = parse(AUTH + TARGET + other + policies.replace('"ops"', '"ops2"'))
    assert policy_digest(changed) != digest


# ------------------------------------------------------------------ files and check-config


def test_toml_syntax_error_reports_line_and_column(tmp_path: Path) -> None:
    file = tmp_path / "g.toml"
    file.write_text("[gateway]\nlog_level = = 1\n")
    with pytest.raises(ConfigFileError) as info:
        load_config(file)
    assert (info.value.line, info.value.column) == (2, 13)
    assert str(info.value).startswith(f"{file}: invalid TOML at line 2, column 13")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text(MINIMAL + POLICY)
    assert main(["check-config", str(good)]) == 0
    assert capsys.readouterr().out == "OK: 1 targets, 1 policies\n"
    assert main(["check-config", "--config", str(good)]) == 0  # as the other commands
    assert capsys.readouterr().out == "OK: 1 targets, 1 policies\n"
    assert main(["check-config"]) == 2
    assert "FILE or --config FILE" in capsys.readouterr().err

    bad = tmp_path / "bad.toml"
    bad.write_text(MINIMAL.replace("port = 5432", 'port = "x"') + "[admin]\n")
    assert main(["check-config", str(bad)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[:2] == [
        "targets[0].port: expected int, got str",
        "admin.listen: required key is missing",
    ]

    broken = tmp_path / "broken.toml"
    broken.write_text("x = [\n")
    assert main(["check-config", str(broken)]) == 2
    assert "line 2, column 1" in capsys.readouterr().err
    assert main(["check-config", str(tmp_path / "nope.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_example_in_docs_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = Path(__file__).parents[2] / "docs" / "configuration.md"
    text = docs.read_text()
    start = text.index("```toml\n# complete example")
    example = text[start + len("```toml\n") : text.index("```", start + 7)]
    config = parse(example)
    assert config.targets and config.policies
    assert os.path.isabs(config.auth.jwks_file or "")
    assert expiry_grace(config) == 60.0


def test_expiry_grace_prefers_auth_and_falls_back_to_the_older_key() -> None:
    assert expiry_grace(parse(MINIMAL)) == 0.0
    older = MINIMAL.replace("[auth]", '[gateway]\ntoken_expiry_grace = "30s"\n\n[auth]', 1)
    assert expiry_grace(parse(older)) == 30.0
    both = older.replace("[auth]\n", '[auth]\nexpiry_grace = "2m"\n', 1)
    assert expiry_grace(parse(both)) == 120.0
    bad = MINIMAL.replace("[auth]\n", '[auth]\nexpiry_grace = "-1s"\n', 1)
    assert errors(bad) and "auth.expiry_grace" in errors(bad)[0]


# ------------------------------------------------------------------ statement policy keys


def test_policy_allow_is_required() -> None:
    text = MINIMAL + '[[policies]]\nname = "p"\ngroups = ["g"]\ntargets = ["app-pg"]\n'
    assert errors(text) == ["policies[0].allow: required key is missing"]


def test_policy_statement_keys_are_checked_with_key_paths() -> None:
    text = MINIMAL + textwrap.dedent(
        """
        [[policies]]
        name = "p"
        groups = ["g"]
        targets = ["app-pg"]
        allow = ["read", "reed"]
        deny = ["drop_databse"]
        review = ["no-such-rule"]

        [[policies.rules]]
        name = "empty"
        """
    )
    found = errors(text)
    assert any(e.startswith("policies[0].allow[1]: ") and "reed" in e for e in found), found
    assert any(e.startswith("policies[0].deny[0]: ") for e in found), found
    assert any(e.startswith("policies[0].review[0]: ") for e in found), found
    assert any(e.startswith("policies[0].rules[0]") for e in found), found


def test_policy_on_unknown_target_is_rejected() -> None:
    text = MINIMAL + (
        '[[policies]]\nname = "p"\ngroups = ["g"]\ntargets = ["nope"]\nallow = ["read"]\n'
    )
    assert errors(text) == ['policies[0].targets[0]: no target is named "nope"']


def test_a_detector_name_means_one_detector_across_policies() -> None:
    """A session's masks are the union of its policies' masks, found by detector name:
    two definitions of one name would leave one policy's values unmasked."""

    def policy(name: str, pattern: str) -> str:
        return f"""
[[policies]]
name = "{name}"
groups = ["{name}"]
targets = ["app-pg"]
allow = ["read"]
[[policies.detectors]]
name = "acct"
pattern = "{pattern}"
[[policies.masks]]
detectors = ["acct"]
"""

    assert errors(
        MINIMAL + policy("team-a", "ACC-[0-9]{10}") + policy("team-b", "ACCT-[0-9]{6}")
    ) == [
        'policies[1].detectors[0].name: detector "acct" is defined differently in policies[0]: '
        "a detector name means one detector in the whole configuration"
    ]
    assert parse(MINIMAL + policy("team-a", "ACC-[0-9]{10}") + policy("team-b", "ACC-[0-9]{10}"))
