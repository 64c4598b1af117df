"""What a hot reload takes from a new configuration file, and what it keeps until a
restart (gateway.reload.plan_reload)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import Config, ConfigError, parse_config
from gateway.reload import plan_reload

BASE = """
[gateway]
shutdown_grace = "3s"

[auth]
issuer = "https://idp.example.com/"
audience = "db-gateway"
jwks_file = "jwks.json"

[admin]
listen = "127.0.0.1:8081"
groups = ["gateway-admins"]
allow_plaintext = true

[audit]
redact_literals = true

[alerts]
denied = 10

[[targets]]
name = "app-pg"
protocol = "postgres"
listen = "127.0.0.1:6432"
host = "db.internal"
port = 5432
database = "app"
user = "gateway"
password_env = "APP_PG_PASSWORD"

[[policies]]
name = "contractors"
groups = ["contractors"]
targets = ["app-pg"]
allow = ["read"]
"""


def parse(text: str) -> Config:
    return parse_config(text, Path("/etc/gateway"))


def test_nothing_changed() -> None:
    plan = plan_reload(parse(BASE), parse(BASE))
    assert plan.changed == [] and plan.restart_required == []


def test_policies_and_reloadable_keys_are_taken() -> None:
    new = parse(
        BASE.replace('allow = ["read"]', 'allow = ["read", "session"]\nmax_rows = 10')
        .replace("denied = 10", "denied = 3")
        .replace("redact_literals = true", "redact_literals = false")
        .replace('groups = ["gateway-admins"]', 'groups = ["gateway-admins", "sre"]')
    )
    plan = plan_reload(parse(BASE), new)
    assert plan.restart_required == []
    assert set(plan.changed) == {
        "policies",
        "alerts.denied",
        "audit.redact_literals",
        "admin.groups",
    }
    assert plan.config.policies == new.policies
    assert plan.config.alerts.denied == 3
    assert plan.config.audit.redact_literals is False
    assert plan.config.admin is not None and plan.config.admin.groups == ["gateway-admins", "sre"]


def test_keys_that_need_a_restart_keep_their_running_value() -> None:
    running = parse(BASE)
    new = parse(
        BASE.replace('shutdown_grace = "3s"', 'shutdown_grace = "9s"')
        .replace('listen = "127.0.0.1:8081"', 'listen = "127.0.0.1:9091"')
        .replace('listen = "127.0.0.1:6432"', 'listen = "127.0.0.1:7432"')
        .replace("denied = 10", 'denied = 10\nwebhook_url = "https://hooks.example.com/a"')
    )
    plan = plan_reload(running, new)
    assert plan.restart_required == [
        "gateway.shutdown_grace",
        "admin.listen",
        "alerts.webhook_url",
        "targets",
    ]
    assert plan.changed == []
    assert plan.config == running


def test_removing_the_admin_section_needs_a_restart() -> None:
    new_text = BASE.replace(
        '[admin]\nlisten = "127.0.0.1:8081"\ngroups = ["gateway-admins"]\nallow_plaintext = true\n',
        "",
    )
    plan = plan_reload(parse(BASE), parse(new_text))
    assert plan.restart_required == ["admin"]
    assert plan.config.admin is not None


def test_a_policy_on_a_target_only_a_restart_would_add_is_refused() -> None:
    extra_target = BASE.replace(
        "[[policies]]",
        """[[targets]]
name = "new-pg"
protocol = "postgres"
listen = "127.0.0.1:6433"
host = "db2.internal"
port = 5432
database = "app"
user = "gateway"
password_env = "APP_PG_PASSWORD"

[[policies]]""",
    ).replace('targets = ["app-pg"]\nallow', 'targets = ["new-pg"]\nallow')
    with pytest.raises(ConfigError) as info:
        plan_reload(parse(BASE), parse(extra_target))
    assert "'new-pg' is not running" in info.value.errors[0]


def test_reload_live_sessions_is_taken_from_the_new_file() -> None:
    new = parse(
        BASE.replace('shutdown_grace = "3s"', 'shutdown_grace = "3s"\nreload_live_sessions = "end"')
    )
    plan = plan_reload(parse(BASE), new)
    assert plan.changed == ["gateway.reload_live_sessions"] and plan.restart_required == []
    assert plan.config.gateway.reload_live_sessions == "end"
