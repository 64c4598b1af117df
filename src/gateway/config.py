"""Gateway configuration: msgspec Structs, TOML loading and validation.

Rules this module enforces:

* Every error is reported, not just the first, each as ``key.path[i].leaf: message`` so an
  operator can fix a whole file in one pass (``ConfigError.errors``).
* Unknown keys are errors. A misspelt key would otherwise silently fall back to a default,
  and for a security gateway a default is usually the permissive choice.
* Keys that the product documents but this version does not enforce yet (policy rules,
  limits, approvals, the admin API) are *rejected*: a guard that is configured but not
  applied is worse than no guard, because people believe they are protected.
* Relative file paths are resolved against the directory of the config file and stored as
  absolute paths, so the gateway behaves the same whatever its working directory.

The validator walks the Struct types (``msgspec.structs.fields``) alongside the parsed TOML
instead of calling ``msgspec.convert`` once on the whole document, because ``convert`` stops
at the first error. Leaves are still checked by ``msgspec.convert(strict=True)``; extra
constraints are declared next to the field types with ``Annotated`` markers.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Union
from urllib.parse import urlsplit

import msgspec

from .masking.detectors import BUILTIN_DETECTORS, CustomDetector, DetectorError, compile_detectors
from .masking.rules import column_pattern_problem
from .policy import validate_policy

__all__ = [
    "DEFAULT_ALGORITHMS",
    "SUPPORTED_PROTOCOLS",
    "UNENFORCED_POLICY_KEYS",
    "AdminSection",
    "ApprovalsSection",
    "AuthSection",
    "Config",
    "ConfigError",
    "ConfigFileError",
    "DetectorDef",
    "GatewaySection",
    "MaskRule",
    "MaskingSection",
    "Policy",
    "RecordingSection",
    "Target",
    "TlsSection",
    "expiry_grace",
    "load_config",
    "parse_byte_size",
    "parse_config",
    "parse_duration",
    "parse_listen",
    "policy_digest",
    "read_mask_hash_key",
    "read_target_password",
    "read_webhook_secret",
    "target_allowed",
    "targets_allowed",
]


# --------------------------------------------------------------------------- errors


class ConfigError(Exception):
    """The configuration is invalid; ``errors`` holds every problem as ``"path: message"``."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


class ConfigFileError(ConfigError):
    """The file could not be read or is not valid TOML (``line``/``column`` when known)."""

    def __init__(self, message: str, *, line: int | None = None, column: int | None = None):
        self.line = line
        self.column = column
        super().__init__([message])


# --------------------------------------------------------------------------- markers
# Constraints declared next to the types. msgspec ignores Annotated metadata that is not a
# msgspec.Meta, so these only drive our own validator.


@dataclass(frozen=True, slots=True)
class _Duration:
    """Seconds as a number, or a string such as "15s", "2m", "1h", "500ms"."""


@dataclass(frozen=True, slots=True)
class _ByteSize:
    """Bytes as an integer, or a string such as "512KB", "10MB", "1GiB"."""


@dataclass(frozen=True, slots=True)
class _FilePath:
    """A path resolved against the config file's directory."""


@dataclass(frozen=True, slots=True)
class _NonEmpty:
    """A string or list that must not be empty."""


@dataclass(frozen=True, slots=True)
class _Min:
    value: float
    exclusive: bool = False


@dataclass(frozen=True, slots=True)
class _Max:
    value: float


Duration = Annotated[float, _Duration(), _Min(0)]
PositiveDuration = Annotated[float, _Duration(), _Min(0, exclusive=True)]
FilePath = Annotated[str, _FilePath(), _NonEmpty()]
# An optional limit: absent means no limit; present, at least 1.
RowLimit = Annotated[int | None, _Min(1)]
ByteLimit = Annotated[int | None, _ByteSize(), _Min(1)]
OptionalFilePath = Annotated[str | None, _FilePath(), _NonEmpty()]
Name = Annotated[str, _NonEmpty()]

MiB: Final = 1024 * 1024
SUPPORTED_PROTOCOLS: Final[frozenset[str]] = frozenset({"postgres", "mysql"})
DEFAULT_ALGORITHMS: Final[tuple[str, ...]] = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
# Names (targets, policies) end up in recordings, logs and file names; keep them boring.
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


# --------------------------------------------------------------------------- structs


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class GatewaySection(_Section, frozen=True, kw_only=True):
    state_dir: FilePath = ".gateway"
    session_dir: FilePath = "sessions"
    # Largest single frontend/backend message the gateway will buffer; bigger ones are
    # refused before they are read into memory.
    max_message_size: Annotated[int, _Min(1024)] = 64 * MiB
    login_timeout: PositiveDuration = 15.0
    shutdown_grace: Duration = 30.0
    # A session is ended this long after its token's ``exp`` (superseded by auth.expiry_grace).
    token_expiry_grace: Duration = 0.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"
    # On hot reload, live sessions whose applicable policies changed keep the rules they
    # started with ("keep") or are ended so that they reconnect under the new ones ("end").
    reload_live_sessions: Literal["keep", "end"] = "keep"


class TlsSection(_Section, frozen=True, kw_only=True):
    cert_file: OptionalFilePath = None
    key_file: OptionalFilePath = None
    allow_plaintext: bool = False
    min_version: Literal["1.2", "1.3"] = "1.2"


class AuthSection(_Section, frozen=True, kw_only=True):
    issuer: Name
    audience: Annotated[str | list[str], _NonEmpty()]
    jwks_file: OptionalFilePath = None
    jwks_url: Annotated[str | None, _NonEmpty()] = None
    user_claim: Name = "sub"
    groups_claim: Name = "groups"
    algorithms: Annotated[list[str], _NonEmpty()] = msgspec.field(
        default_factory=lambda: list(DEFAULT_ALGORITHMS)
    )
    leeway: Duration = 30.0
    jwks_cache_ttl: Duration = 600.0
    jwks_min_refetch_interval: Duration = 30.0
    max_token_size: Annotated[int, _Min(1)] = 16384
    # A session ends this long after its token's ``exp`` (docs/operations.md, "Revocation
    # and the kill switch"); unset: ``gateway.token_expiry_grace``, the older spelling.
    expiry_grace: Annotated[float | None, _Duration(), _Min(0)] = None

    @property
    def audiences(self) -> list[str]:
        return [self.audience] if isinstance(self.audience, str) else list(self.audience)

    @property
    def discovery_url(self) -> str:
        # OpenID Connect Discovery 1.0 section 4: strip a trailing "/" then append the path.
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"


class RecordingSection(_Section, frozen=True, kw_only=True):
    enabled: bool = True
    fsync_interval: Duration = 1.0
    on_failure: Literal["refuse", "continue"] = "refuse"
    signing_key_file: OptionalFilePath = None
    # The recorder pauses upstream reading while more than this many bytes wait for disk.
    max_buffer: Annotated[int, _Min(1024)] = 8 * MiB


class MaskingSection(_Section, frozen=True, kw_only=True):
    """Process-wide masking settings (docs/masking.md)."""

    # The HMAC-SHA-256 key of the "hash" style: from an environment variable or a file,
    # never from the config file itself (configs are shared and committed).
    hash_key_env: Annotated[str | None, _NonEmpty()] = None
    hash_key_file: OptionalFilePath = None
    # How often the column catalog of each target is reloaded (it is also reloaded after
    # every DDL statement and whenever a result names a table the gateway does not know).
    catalog_refresh: PositiveDuration = 300.0


class AdminSection(_Section, frozen=True, kw_only=True):
    """The admin HTTP API (approvals; docs/approvals.md): off unless this section exists."""

    listen: Name
    # Members of these groups may use the admin API (list requests and history). Deciding a
    # request also needs membership of one of its policy's ``approvers`` groups.
    groups: Annotated[list[Name], _NonEmpty()] = msgspec.field(
        default_factory=lambda: ["gateway-admins"]
    )
    # TLS for the admin listener; absent => the client-facing certificate of [tls] (or the
    # generated one). Plain HTTP only on a loopback address with allow_plaintext.
    allow_plaintext: bool = False
    # Members of these groups may sign in to the web console to browse recordings (and see
    # live sessions), but neither decide approvals nor kill sessions (docs/console.md).
    auditor_groups: list[Name] = msgspec.field(default_factory=list)
    # GET /metrics without a token (a Prometheus scraper on a trusted network); otherwise it
    # needs the same bearer JWT as the API (docs/operations.md).
    metrics_public: bool = False


class AuditSection(_Section, frozen=True, kw_only=True):
    """The audit log: one JSON line per statement and event (docs/audit-log.md)."""

    enabled: bool = True
    # A file (appended; reopened on SIGHUP for rotation) or "-" for standard output.
    # Relative to the configuration file; absent => <state_dir>/audit.log.
    path: Annotated[str | None, _NonEmpty()] = None
    # Literals in statement texts replaced by "?" (the fingerprint is computed either way).
    redact_literals: bool = True
    flush_interval: PositiveDuration = 1.0
    # Lines held in memory when the file cannot keep up; beyond this they are dropped.
    max_buffer: Annotated[int, _ByteSize(), _Min(64 * 1024)] = 64 * MiB


class AlertsSection(_Section, frozen=True, kw_only=True):
    """Alert rules over a rolling window per identity (docs/alerts.md). 0 turns a rule off."""

    enabled: bool = True
    window: PositiveDuration = 600.0
    # The same alert (rule and identity, or address) fires at most once per cooldown.
    cooldown: Duration = 900.0
    large_result_rows: Annotated[int, _Min(1)] = 10000
    large_results: Annotated[int, _Min(0)] = 5
    rows: Annotated[int, _Min(0)] = 0
    denied: Annotated[int, _Min(0)] = 10
    approval_requests: Annotated[int, _Min(0)] = 5
    auth_failures: Annotated[int, _Min(0)] = 10
    sensitive_tables: list[Name] = msgspec.field(default_factory=list)
    # Tables named in any policy's masks count as sensitive too.
    sensitive_masked_tables: bool = True
    webhook_url: Annotated[str | None, _NonEmpty()] = None
    webhook_secret_env: Annotated[str | None, _NonEmpty()] = None
    webhook_secret_file: OptionalFilePath = None
    webhook_timeout: PositiveDuration = 5.0


class ApprovalsSection(_Section, frozen=True, kw_only=True):
    """How approvers are told about a request (docs/approvals.md)."""

    # POSTed a JSON body for every new approval request; https (plain http on loopback only).
    webhook_url: Annotated[str | None, _NonEmpty()] = None
    # HMAC-SHA-256 key for the X-Gateway-Signature header, from the environment or a file.
    webhook_secret_env: Annotated[str | None, _NonEmpty()] = None
    webhook_secret_file: OptionalFilePath = None
    webhook_timeout: PositiveDuration = 5.0
    # Decided requests kept in memory for the history endpoint.
    history: Annotated[int, _Min(1)] = 1000


class Target(_Section, frozen=True, kw_only=True):
    name: Name
    protocol: Literal["postgres", "mysql"]
    listen: Name
    host: Name
    port: Annotated[int, _Min(1), _Max(65535)]
    database: Name
    user: Name
    password_env: Annotated[str | None, _NonEmpty()] = None
    password_file: OptionalFilePath = None
    tls: Literal["disable", "prefer", "require", "verify-full"] = "prefer"
    tls_ca_file: OptionalFilePath = None
    tls_server_name: Annotated[str | None, _NonEmpty()] = None
    connect_timeout: PositiveDuration = 10.0

    @property
    def listen_host(self) -> str:
        return parse_listen(self.listen)[0]

    @property
    def listen_port(self) -> int:
        return parse_listen(self.listen)[1]


class PolicyRule(_Section, frozen=True, kw_only=True):
    """A custom statement rule (docs/policy.md): matches when every matcher given matches;
    referenced by name from a policy's ``deny`` or ``review``."""

    name: Name
    classes: list[str] = msgspec.field(default_factory=list)
    kinds: list[str] = msgspec.field(default_factory=list)
    tables: list[str] = msgspec.field(default_factory=list)
    functions: list[str] = msgspec.field(default_factory=list)
    schemas: list[str] = msgspec.field(default_factory=list)


MASK_STYLES: Final[tuple[str, ...]] = (
    "redact",
    "last4",
    "keep_last",
    "hash",
    "null",
    "fixed",
    "email",
)


class MaskRule(_Section, frozen=True, kw_only=True):
    """One ``[[policies.masks]]`` entry: what to mask (source columns, content detectors)
    and how (docs/masking.md)."""

    columns: list[Name] = msgspec.field(default_factory=list)
    detectors: list[Name] = msgspec.field(default_factory=list)
    style: Literal["redact", "last4", "keep_last", "hash", "null", "fixed", "email"] = "redact"
    keep_last: Annotated[int | None, _Min(1)] = None
    value: str | None = None


class DetectorDef(_Section, frozen=True, kw_only=True):
    """A custom content detector: a regular expression and an optional validator."""

    name: Name
    pattern: Name
    validator: Literal["luhn", "iban_mod97", "ssn"] | None = None


class Policy(_Section, frozen=True, kw_only=True):
    name: Name
    groups: Annotated[list[Name], _NonEmpty()]
    targets: Annotated[list[Name], _NonEmpty()]
    # Statement classes this policy allows ("*" = all but "unknown"); required, so that
    # what a group may run is always written down (docs/policy.md).
    allow: list[str]
    deny: list[str] = msgspec.field(default_factory=list)
    review: list[str] = msgspec.field(default_factory=list)
    rules: list[PolicyRule] = msgspec.field(default_factory=list)
    # Rows recorded per statement (the client still receives all of them).
    record_rows: Annotated[int, _Min(0)] = 1000
    masks: list[MaskRule] = msgspec.field(default_factory=list)
    detectors: list[DetectorDef] = msgspec.field(default_factory=list)
    # A result of a statement whose column lineage cannot be established, when it may read a
    # masked column: every output column masked ("mask"), or the statement refused ("deny").
    on_unknown_lineage: Literal["mask", "deny"] = "mask"
    # A masked column whose type cannot carry a masked value (arrays, records, extension
    # types...): the value becomes NULL ("null"), or the statement is refused ("deny").
    on_unmaskable: Literal["null", "deny"] = "null"
    # Result limits (docs/limits.md); absent = no limit. Bytes are the row bytes the client
    # receives (after masking). Per statement result:
    max_rows: RowLimit = None
    max_bytes: ByteLimit = None
    # Cumulative per session (every statement, cursor FETCH and portal counts):
    session_max_rows: RowLimit = None
    session_max_bytes: ByteLimit = None
    # Cumulative per identity over a rolling window, across sessions and reconnects:
    window_max_rows: RowLimit = None
    window_max_bytes: ByteLimit = None
    window: PositiveDuration = 3600.0
    # What happens at a limit: an error, the result cut short with a notice, or a pause
    # until an approver (a member of a group in ``approvers``) decides.
    on_limit: Literal["error", "truncate", "approval"] = "error"
    approvers: list[Name] = msgspec.field(default_factory=list)
    approval_timeout: PositiveDuration = 300.0


class Config(_Section, frozen=True, kw_only=True):
    gateway: GatewaySection = msgspec.field(default_factory=GatewaySection)
    tls: TlsSection = msgspec.field(default_factory=TlsSection)
    auth: AuthSection
    recording: RecordingSection = msgspec.field(default_factory=RecordingSection)
    masking: MaskingSection = msgspec.field(default_factory=MaskingSection)
    admin: AdminSection | None = None
    approvals: ApprovalsSection = msgspec.field(default_factory=ApprovalsSection)
    audit: AuditSection = msgspec.field(default_factory=AuditSection)
    alerts: AlertsSection = msgspec.field(default_factory=AlertsSection)
    targets: Annotated[list[Target], _NonEmpty()]
    policies: list[Policy] = msgspec.field(default_factory=list)


# Documented keys that this version does not enforce are refused (see the module docstring):
# none at present. Add an entry here rather than accept a key that would be ignored.
UNENFORCED_POLICY_KEYS: Final[Mapping[str, str]] = {}
_REJECTED_KEYS: Final[Mapping[type, Mapping[str, str]]] = {Policy: UNENFORCED_POLICY_KEYS}


# --------------------------------------------------------------------------- small parsers

_DURATION_RE: Final = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")
_DURATION_PART_RE: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: str | int | float) -> float:
    """Seconds from a number or a string such as "15s", "2m", "1h30m", "500ms".

    Raises ValueError. A bare numeric string is refused: "15" in a file is more likely a
    forgotten unit than a deliberate number of seconds.
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration, got bool")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if not _DURATION_RE.fullmatch(text):
            raise ValueError(f"invalid duration {value!r}")
        seconds = sum(
            float(num) * _UNIT_SECONDS[unit] for num, unit in _DURATION_PART_RE.findall(text)
        )
    else:
        raise ValueError(f"expected a duration, got {type(value).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"duration must be a finite number >= 0, got {value!r}")
    return seconds


_SIZE_RE: Final = re.compile(r"(\d+)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?")
_SIZE_UNITS: Final = {
    None: 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "TiB": 1024**4,
}


def parse_byte_size(value: str | int) -> int:
    """Bytes from an integer or a string such as "512KB", "10MB", "1GiB" (SI units are
    powers of 1000, IEC units powers of 1024). Raises ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected a size, got {type(value).__name__}")
    if isinstance(value, int):
        return value
    match = _SIZE_RE.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"invalid size {value!r}")
    return int(match[1]) * _SIZE_UNITS[match[2]]


def parse_listen(text: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6addr]:port"`` -> ``(host, port)``; port 0 means any free port."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f'expected "host:port", got {text!r}')
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"invalid IPv6 address in {text!r}") from None
    elif ":" in host:
        raise ValueError(f'IPv6 addresses must be written in brackets: "[{host}]:{port_text}"')
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port must be between 0 and 65535, got {port}")
    return host, port


# --------------------------------------------------------------------------- the walker


class _Invalid:
    """Sentinel for a value that failed validation (its error is already recorded)."""


_INVALID: Final = _Invalid()
_BARE_KEY_RE: Final = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(slots=True)
class _Ctx:
    base_dir: Path
    errors: list[str]

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")


def _join(path: str, key: str) -> str:
    shown = key if _BARE_KEY_RE.fullmatch(key) else msgspec.json.encode(key).decode()
    return f"{path}.{shown}" if path else shown


def _toml_type(value: object) -> str:
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


def _split_annotated(tp: Any) -> tuple[Any, tuple[object, ...]]:
    if typing.get_origin(tp) is Annotated:
        base, *meta = typing.get_args(tp)
        return base, tuple(meta)
    return tp, ()


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _union_members(tp: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(tp) in (Union, types.UnionType):
        return typing.get_args(tp)
    return None


def _describe(tp: Any) -> str:
    tp, meta = _split_annotated(tp)
    if any(isinstance(m, _Duration) for m in meta):
        return 'a duration (seconds, or a string like "15s", "2m", "1h", "500ms")'
    if any(isinstance(m, _ByteSize) for m in meta):
        return 'a size (bytes, or a string like "512KB", "10MB", "1GiB")'
    if _is_struct(tp):
        return "table"
    if typing.get_origin(tp) is list:
        return f"list of {_describe(typing.get_args(tp)[0])}"
    if typing.get_origin(tp) is Literal:
        options = ", ".join(msgspec.json.encode(v).decode() for v in typing.get_args(tp))
        return f"one of {options}"
    members = _union_members(tp)
    if members is not None:
        return " or ".join(_describe(m) for m in members if m is not type(None))
    return getattr(tp, "__name__", str(tp))


def _check_value(value: Any, tp: Any, path: str, ctx: _Ctx) -> Any:
    base, meta = _split_annotated(tp)
    members = _union_members(base)
    if members is not None and type(None) in members:
        # TOML has no null, so an optional field that is present must hold the other type.
        rest = tuple(m for m in members if m is not type(None))
        base = rest[0] if len(rest) == 1 else Union[rest]  # noqa: UP007 (runtime construction)

    if any(isinstance(m, _Duration) for m in meta):
        try:
            result: Any = parse_duration(value)
        except ValueError as exc:
            if isinstance(value, int | float) and not isinstance(value, bool):
                ctx.error(path, str(exc))  # a number, but negative or infinite
            else:
                shown = msgspec.json.encode(value).decode() if isinstance(value, str) else ""
                ctx.error(path, f"expected {_describe(tp)}, got {shown or _toml_type(value)}")
            return _INVALID
    elif any(isinstance(m, _ByteSize) for m in meta):
        try:
            result = parse_byte_size(value)
        except ValueError:
            shown = msgspec.json.encode(value).decode() if isinstance(value, str) else ""
            ctx.error(path, f"expected {_describe(tp)}, got {shown or _toml_type(value)}")
            return _INVALID
    elif _is_struct(base):
        return _check_struct(value, base, path, ctx)
    elif typing.get_origin(base) is list or (
        isinstance(value, list) and _list_member(base) is not None
    ):
        # For "str | list[str]" a TOML array is checked item by item, so a bad item is named.
        result = _check_list(value, _list_member(base) or base, path, ctx)
        if result is _INVALID:
            return _INVALID
    else:
        try:
            result = msgspec.convert(value, base, strict=True)
        except msgspec.ValidationError:
            ctx.error(path, _type_mismatch(value, base))
            return _INVALID

    if not _check_constraints(result, meta, path, ctx):
        return _INVALID
    if any(isinstance(m, _FilePath) for m in meta):
        result = _resolve_path(result, ctx.base_dir)
    return result


def _list_member(tp: Any) -> Any:
    members = _union_members(tp) or ()
    lists = [m for m in members if typing.get_origin(m) is list]
    return lists[0] if len(lists) == 1 else None


def _type_mismatch(value: Any, tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        options = typing.get_args(tp)
        if isinstance(value, str):
            return f"expected {_describe(tp)}, got {msgspec.json.encode(value).decode()}"
        if isinstance(value, int | float) and str(value) in options:
            # min_version = 1.3 is a TOML float; the fix is a pair of quotes.
            return f'expected {_describe(tp)}, got {_toml_type(value)} (quote it: "{value}")'
    return f"expected {_describe(tp)}, got {_toml_type(value)}"


def _check_list(value: Any, tp: Any, path: str, ctx: _Ctx) -> list[Any] | _Invalid:
    if not isinstance(value, list):
        ctx.error(path, f"expected {_describe(tp)}, got {_toml_type(value)}")
        return _INVALID
    (item_type,) = typing.get_args(tp)
    # Invalid items stay in place as _INVALID so cross-field checks keep the right indices.
    return [_check_value(item, item_type, f"{path}[{i}]", ctx) for i, item in enumerate(value)]


def _check_constraints(value: Any, meta: tuple[object, ...], path: str, ctx: _Ctx) -> bool:
    for m in meta:
        if isinstance(m, _NonEmpty) and isinstance(value, str | list) and len(value) == 0:
            ctx.error(path, "must not be empty")
            return False
        if isinstance(m, _Min) and (value < m.value or (m.exclusive and value == m.value)):
            relation = ">" if m.exclusive else ">="
            ctx.error(path, f"must be {relation} {_num(m.value)}, got {_num(value)}")
            return False
        if isinstance(m, _Max) and value > m.value:
            ctx.error(path, f"must be <= {_num(m.value)}, got {_num(value)}")
            return False
    return True


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _resolve_path(value: str, base_dir: Path) -> str:
    # abspath normalises ".." without following symlinks: Kubernetes mounts secrets through a
    # "..data" symlink that it swaps on rotation, so resolving it would pin the old version.
    return os.path.abspath(base_dir / Path(value).expanduser())


def _check_struct(value: Any, tp: type[msgspec.Struct], path: str, ctx: _Ctx) -> Any:
    if not isinstance(value, dict):
        ctx.error(path or "<document>", f"expected table, got {_toml_type(value)}")
        return _INVALID
    fields = {f.encode_name: f for f in msgspec.structs.fields(tp)}
    rejected = _REJECTED_KEYS.get(tp, {})
    values: dict[str, Any] = {}
    ok = True
    for key, item in value.items():
        sub = _join(path, key)
        if key in rejected:
            ctx.error(sub, rejected[key])
            ok = False
        elif key not in fields:
            ctx.error(sub, _unknown_key(key, fields))
            ok = False
        else:
            checked = _check_value(item, fields[key].type, sub, ctx)
            values[fields[key].name] = checked
            ok = ok and checked is not _INVALID and not _has_invalid(checked)
    for key, f in fields.items():
        if key in value:
            continue
        if f.required:
            ctx.error(_join(path, key), "required key is missing")
            ok = False
            continue
        default = f.default_factory() if f.default is msgspec.NODEFAULT else f.default
        # Defaults go through the same walk so default sections and paths get resolved too.
        base, _ = _split_annotated(f.type)
        if _is_struct(base):
            default = _check_struct({}, base, _join(path, key), ctx)
        elif isinstance(default, str):
            default = _check_value(default, f.type, _join(path, key), ctx)
        values[f.name] = default
    for check in _STRUCT_CHECKS.get(tp, ()):
        check(values, value, path, ctx)
    return tp(**values) if ok else _INVALID


def _has_invalid(value: Any) -> bool:
    return isinstance(value, list) and any(v is _INVALID for v in value)


def _unknown_key(key: str, fields: Mapping[str, Any]) -> str:
    close = get_close_matches(key, list(fields), n=1)
    return f'unknown key; did you mean "{close[0]}"?' if close else "unknown key"


# --------------------------------------------------------------------------- cross-field checks
# Each check receives the fields that validated (invalid ones are _INVALID or absent), so the
# errors it can detect are reported together with every type error.

_Check = Callable[[dict[str, Any], Mapping[str, Any], str, _Ctx], None]


def _ok(values: Mapping[str, Any], *keys: str) -> bool:
    return all(k in values and values[k] is not _INVALID for k in keys)


def _valid_items(items: Any) -> list[tuple[int, Any]]:
    if not isinstance(items, list):
        return []
    return [(i, item) for i, item in enumerate(items) if item is not _INVALID]


def _check_tls(values: dict[str, Any], raw: Mapping[str, Any], path: str, ctx: _Ctx) -> None:
    if not _ok(values, "cert_file", "key_file"):
        return
    if values["cert_file"] is not None and values["key_file"] is None:
        ctx.error(_join(path, "key_file"), "required when cert_file is set")
    if values["key_file"] is not None and values["cert_file"] is None:
        ctx.error(_join(path, "cert_file"), "required when key_file is set")


_LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "::1"})
_SYMMETRIC_PREFIX: Final = "HS"


def _check_url(url: str, path: str, ctx: _Ctx, *, purpose: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and (parts.hostname or "") in _LOOPBACK_NAMES:
        return  # local development and tests only: nothing leaves the machine
    ctx.error(path, f"{purpose} must be an https:// URL (plain http only for loopback hosts)")


def _check_auth(values: dict[str, Any], raw: Mapping[str, Any], path: str, ctx: _Ctx) -> None:
    if _ok(values, "jwks_file", "jwks_url"):
        if values["jwks_file"] is not None and values["jwks_url"] is not None:
            ctx.error(_join(path, "jwks_url"), "set at most one of jwks_file and jwks_url")
        elif values["jwks_url"] is not None:
            _check_url(values["jwks_url"], _join(path, "jwks_url"), ctx, purpose="jwks_url")
        elif values["jwks_file"] is None and _ok(values, "issuer"):
            # Neither source: the keys come from the issuer's discovery document.
            _check_url(
                values["issuer"],
                _join(path, "issuer"),
                ctx,
                purpose="without jwks_file or jwks_url the issuer is used for OIDC discovery and",
            )
    for i, alg in _valid_items(values.get("algorithms")):
        message = _algorithm_problem(alg)
        if message:
            ctx.error(f"{_join(path, 'algorithms')}[{i}]", message)


def _algorithm_problem(alg: str) -> str | None:
    if alg.lower() == "none":
        return '"none" means unsigned tokens and is never accepted'
    if alg.upper().startswith(_SYMMETRIC_PREFIX):
        return (
            f"{alg} is a shared-secret (HMAC) algorithm; the gateway only verifies asymmetric "
            "signatures (RS*, PS*, ES*, EdDSA)"
        )
    if alg not in DEFAULT_ALGORITHMS:
        return f'unsupported algorithm "{alg}"; supported: {", ".join(DEFAULT_ALGORITHMS)}'
    return None


def _check_name(values: dict[str, Any], raw: Mapping[str, Any], path: str, ctx: _Ctx) -> None:
    if _ok(values, "name") and not _NAME_RE.fullmatch(values["name"]):
        ctx.error(
            _join(path, "name"),
            "use letters, digits, '_', '.' and '-' only, starting with a letter or digit",
        )


def _check_target(values: dict[str, Any], raw: Mapping[str, Any], path: str, ctx: _Ctx) -> None:
    _check_name(values, raw, path, ctx)
    protocol = values.get("protocol", _INVALID)
    if protocol is not _INVALID and protocol not in SUPPORTED_PROTOCOLS:
        ctx.error(
            _join(path, "protocol"), f"{protocol} targets are not supported by this version yet"
        )
    if _ok(values, "listen"):
        try:
            parse_listen(values["listen"])
        except ValueError as exc:
            ctx.error(_join(path, "listen"), str(exc))
    if (
        _ok(values, "password_env", "password_file")
        and values["password_env"] is not None
        and values["password_file"] is not None
    ):
        ctx.error(_join(path, "password_file"), "set at most one of password_env and password_file")
    if _ok(values, "tls") and values["tls"] != "verify-full":
        # A CA that is configured but never checked would look like protection.
        for key in ("tls_ca_file", "tls_server_name"):
            if values.get(key) not in (None, _INVALID):
                ctx.error(
                    _join(path, key),
                    'only used with tls = "verify-full"; set that or remove this key',
                )


def _raw_items(raw: Mapping[str, Any], key: str) -> list[tuple[int, dict[str, Any]]]:
    items = raw.get(key)
    if not isinstance(items, list):
        return []
    return [(i, item) for i, item in enumerate(items) if isinstance(item, dict)]


def _check_config(values: dict[str, Any], raw: Mapping[str, Any], path: str, ctx: _Ctx) -> None:
    # Uniqueness and references use the raw tables, so they are reported even when the same
    # entry has type errors elsewhere (its name is still the name the operator wrote).
    targets = _raw_items(raw, "targets")
    _check_unique(targets, "targets", ctx)
    listens: dict[tuple[str, int], int] = {}
    for i, target in targets:
        try:
            host, port = parse_listen(target["listen"])
        except (KeyError, TypeError, ValueError, AttributeError):
            continue  # already reported by the field walk
        if port == 0:
            continue  # every port-0 listener gets its own free port
        if (host, port) in listens:
            ctx.error(
                f"targets[{i}].listen",
                f"{target['listen']} is already used by targets[{listens[host, port]}]",
            )
        listens.setdefault((host, port), i)

    policies = _raw_items(raw, "policies")
    _check_unique(policies, "policies", ctx)
    names = {t.get("name") for _, t in targets}
    for i, policy in policies:
        refs = policy.get("targets")
        for j, name in enumerate(refs if isinstance(refs, list) else []):
            if isinstance(name, str) and name != "*" and name not in names:
                ctx.error(f"policies[{i}].targets[{j}]", f'no target is named "{name}"')
    _check_hash_styles(values, raw, ctx)
    _check_detector_names(values, ctx)
    if values.get("admin") is None:
        for i, policy in _valid_items(values.get("policies")):
            if policy.approvers:
                ctx.error(
                    f"policies[{i}].approvers",
                    "approvers decide through the admin API: add an [admin] section",
                )


def _check_detector_names(values: dict[str, Any], ctx: _Ctx) -> None:
    """A detector name means one detector in the whole file: a session's masks are the
    union of its policies' masks, found by detector name, so two policies giving one name
    different patterns would leave one policy's values unmasked for a user in both."""
    seen: dict[str, tuple[int, DetectorDef]] = {}
    for i, policy in _valid_items(values.get("policies")):
        for j, det in enumerate(policy.detectors):
            first = seen.setdefault(det.name, (i, det))
            if first[1] != det:
                ctx.error(
                    f"policies[{i}].detectors[{j}].name",
                    f'detector "{det.name}" is defined differently in policies[{first[0]}]: '
                    "a detector name means one detector in the whole configuration",
                )


def _check_approvals(values: dict[str, Any], raw: Mapping[str, Any], path: str, ctx: _Ctx) -> None:
    if _ok(values, "webhook_url") and values["webhook_url"] is not None:
        _check_url(values["webhook_url"], _join(path, "webhook_url"), ctx, purpose="webhook_url")
    if (
        _ok(values, "webhook_secret_env", "webhook_secret_file")
        and values["webhook_secret_env"] is not None
        and values["webhook_secret_file"] is not None
    ):
        ctx.error(
            _join(path, "webhook_secret_file"),
            "set at most one of webhook_secret_env and webhook_secret_file",
        )


def _check_audit(values: dict[str, Any], raw: Mapping[str, Any], path: str, ctx: _Ctx) -> None:
    # A file path is relative to the configuration file, like every other path; "-" is stdout.
    target = values.get("path")
    if isinstance(target, str) and target != "-":
        values["path"] = _resolve_path(target, ctx.base_dir)


def _check_alerts(values: dict[str, Any], raw: Mapping[str, Any], path: str, ctx: _Ctx) -> None:
    _check_approvals(values, raw, path, ctx)  # the same webhook keys, the same rules


def _check_admin(values: dict[str, Any], raw: Mapping[str, Any], path: str, ctx: _Ctx) -> None:
    if _ok(values, "listen"):
        try:
            host, _ = parse_listen(values["listen"])
        except ValueError as exc:
            ctx.error(_join(path, "listen"), str(exc))
            return
        if values.get("allow_plaintext") is True and host not in _LOOPBACK_NAMES:
            # Bearer tokens over plain HTTP on a network: refuse at start, not at first use.
            ctx.error(
                _join(path, "allow_plaintext"),
                "plain HTTP is only allowed on a loopback listen address",
            )


def _check_unique(items: list[tuple[int, dict[str, Any]]], key: str, ctx: _Ctx) -> None:
    seen: dict[str, int] = {}
    for i, item in items:
        name = item.get("name")
        if not isinstance(name, str):
            continue
        if name in seen:
            ctx.error(f"{key}[{i}].name", f'duplicate name "{name}" (also {key}[{seen[name]}])')
        seen.setdefault(name, i)


def _check_policy(values: dict[str, Any], raw: Mapping[str, Any], path: str, ctx: _Ctx) -> None:
    _check_name(values, raw, path, ctx)
    # Classes, rule names and rules that can never fire: the policy engine's own checks,
    # on the raw table so that its errors name the keys as written.
    if _ok(values, "allow", "deny", "review", "rules"):
        for key, message in validate_policy(raw, path):
            ctx.error(key, message)
    _check_limits(values, raw, path, ctx)


_LIMIT_KEYS: Final = (
    "max_rows",
    "max_bytes",
    "session_max_rows",
    "session_max_bytes",
    "window_max_rows",
    "window_max_bytes",
)


def _check_limits(values: dict[str, Any], raw: Mapping[str, Any], path: str, ctx: _Ctx) -> None:
    """Approvals need someone to approve: ``on_limit = "approval"`` and ``review`` entries
    name approver groups, and approvers are only accepted where something asks them."""
    if not _ok(values, "on_limit", "approvers", "review"):
        return
    limited = any(values.get(k) not in (None, _INVALID) for k in _LIMIT_KEYS)
    asks = values["on_limit"] == "approval" and limited
    # Keys that only mean something next to others: accepted alone, they would let an
    # operator believe a limit or a review exists.
    if "on_limit" in raw and not limited:
        ctx.error(_join(path, "on_limit"), "only used with a limit (max_rows, max_bytes, ...)")
    windowed = any(values.get(k) not in (None, _INVALID) for k in _LIMIT_KEYS[4:])
    if "window" in raw and not windowed:
        ctx.error(_join(path, "window"), "only used with window_max_rows or window_max_bytes")
    if "approval_timeout" in raw and not asks and not values["review"]:
        ctx.error(
            _join(path, "approval_timeout"),
            'only used with review entries or with on_limit = "approval" and a limit',
        )
    if values["on_limit"] == "approval" and not values["approvers"]:
        ctx.error(
            _join(path, "approvers"),
            'on_limit = "approval" needs approvers: the groups whose members may approve',
        )
    if values["review"] and not values["approvers"]:
        ctx.error(
            _join(path, "approvers"),
            "review entries need approvers: the groups whose members may approve a statement",
        )
    if values["approvers"] and not asks and not values["review"]:
        ctx.error(
            _join(path, "approvers"),
            'only used with review entries or with on_limit = "approval" and a limit',
        )


def _check_masks(values: dict[str, Any], raw: Mapping[str, Any], path: str, ctx: _Ctx) -> None:
    """Mask rules: each names what to mask, its style's options fit the style, and every
    detector it names exists (built in, or defined in this policy's ``detectors``)."""
    custom: dict[str, DetectorDef] = {}
    for i, det in _valid_items(values.get("detectors")):
        dpath = f"{_join(path, 'detectors')}[{i}]"
        if det.name in BUILTIN_DETECTORS:
            ctx.error(_join(dpath, "name"), f'"{det.name}" is a built-in detector name')
            continue
        if det.name in custom:
            ctx.error(_join(dpath, "name"), f'duplicate detector name "{det.name}"')
            continue
        try:
            compile_detectors([det.name], [CustomDetector(det.name, det.pattern, det.validator)])
        except DetectorError as exc:
            ctx.error(_join(dpath, "pattern"), str(exc))
            continue
        custom[det.name] = det
    for i, rule in _valid_items(values.get("masks")):
        mpath = f"{_join(path, 'masks')}[{i}]"
        if not rule.columns and not rule.detectors:
            ctx.error(mpath, "a mask needs columns or detectors (or both)")
        for j, pattern in enumerate(rule.columns):
            problem = column_pattern_problem(pattern)
            if problem:
                ctx.error(f"{_join(mpath, 'columns')}[{j}]", problem)
        for j, name in enumerate(rule.detectors):
            if name not in BUILTIN_DETECTORS and name not in custom:
                known = ", ".join((*BUILTIN_DETECTORS, *custom))
                ctx.error(
                    f"{_join(mpath, 'detectors')}[{j}]",
                    f'unknown detector "{name}"; known: {known}',
                )
        if rule.style == "keep_last" and rule.keep_last is None:
            ctx.error(_join(mpath, "keep_last"), 'required with style = "keep_last"')
        if rule.style != "keep_last" and rule.keep_last is not None:
            ctx.error(_join(mpath, "keep_last"), 'only used with style = "keep_last"')
        if rule.style == "fixed" and rule.value is None:
            ctx.error(_join(mpath, "value"), 'required with style = "fixed"')
        if rule.style != "fixed" and rule.value is not None:
            ctx.error(_join(mpath, "value"), 'only used with style = "fixed"')


def _check_masking(values: dict[str, Any], raw: Mapping[str, Any], path: str, ctx: _Ctx) -> None:
    if (
        _ok(values, "hash_key_env", "hash_key_file")
        and values["hash_key_env"] is not None
        and values["hash_key_file"] is not None
    ):
        ctx.error(_join(path, "hash_key_file"), "set at most one of hash_key_env and hash_key_file")


def _check_hash_styles(values: dict[str, Any], raw: Mapping[str, Any], ctx: _Ctx) -> None:
    masking = values.get("masking")
    if not isinstance(masking, MaskingSection):
        return
    if masking.hash_key_env is not None or masking.hash_key_file is not None:
        return
    for i, policy in _raw_items(raw, "policies"):
        for j, mask in _raw_items(policy, "masks"):
            if mask.get("style") == "hash":
                ctx.error(
                    f"policies[{i}].masks[{j}].style",
                    'style "hash" needs a key: set masking.hash_key_env or masking.hash_key_file',
                )


_STRUCT_CHECKS: Final[Mapping[type, tuple[_Check, ...]]] = {
    TlsSection: (_check_tls,),
    AuthSection: (_check_auth,),
    Target: (_check_target,),
    Policy: (_check_policy, _check_masks),
    PolicyRule: (_check_name,),
    MaskingSection: (_check_masking,),
    AdminSection: (_check_admin,),
    ApprovalsSection: (_check_approvals,),
    AlertsSection: (_check_alerts,),
    AuditSection: (_check_audit,),
    Config: (_check_config,),
}


# --------------------------------------------------------------------------- public API

_TOML_POSITION_RE: Final = re.compile(r"\(at line (\d+), column (\d+)\)")


def parse_config(text: str, base_dir: Path) -> Config:
    """Parse and validate TOML text; relative paths are resolved against ``base_dir``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # Python 3.11's TOMLDecodeError carries the position only inside its message.
        message = str(exc)
        match = _TOML_POSITION_RE.search(message)
        if match is not None:
            line, column = int(match[1]), int(match[2])
            reason = message[: match.start()].strip()
        elif message.endswith("(at end of document)"):
            lines = text.split("\n")
            line, column = len(lines), len(lines[-1]) + 1
            reason = message.removesuffix("(at end of document)").strip()
        else:
            raise ConfigFileError(f"invalid TOML: {message}") from None
        raise ConfigFileError(
            f"invalid TOML at line {line}, column {column}: {reason}", line=line, column=column
        ) from None
    ctx = _Ctx(base_dir=Path(os.path.abspath(base_dir)), errors=[])
    config = _check_struct(data, Config, "", ctx)
    if ctx.errors or not isinstance(config, Config):
        raise ConfigError(ctx.errors or ["<document>: invalid configuration"])
    return config


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a TOML config file. Raises ConfigError (ConfigFileError if unreadable)."""
    file = Path(path)
    try:
        text = file.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigFileError(f"{file}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigFileError(f"{file}: not UTF-8 text ({exc.reason})") from None
    try:
        return parse_config(text, Path(os.path.abspath(file)).parent)
    except ConfigFileError as exc:
        raise ConfigFileError(f"{file}: {exc}", line=exc.line, column=exc.column) from None


def read_target_password(target: Target) -> str | None:
    """The upstream password from ``password_env`` or ``password_file``; None if neither is set.

    Error messages name the key and the variable or file, never the value.
    """
    where = f"targets[name={msgspec.json.encode(target.name).decode()}]"
    if target.password_env is not None:
        value = os.environ.get(target.password_env)
        if value is None:
            raise ConfigError(
                [f"{where}.password_env: environment variable {target.password_env} is not set"]
            )
        if not value:
            raise ConfigError(
                [f"{where}.password_env: environment variable {target.password_env} is empty"]
            )
        return value
    if target.password_file is not None:
        try:
            raw = Path(target.password_file).read_bytes()
        except OSError as exc:
            raise ConfigError(
                [f"{where}.password_file: cannot read {target.password_file}: {exc.strerror}"]
            ) from None
        try:
            value = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise ConfigError(
                [f"{where}.password_file: {target.password_file} is not UTF-8"]
            ) from None
        if not value:
            raise ConfigError([f"{where}.password_file: {target.password_file} is empty"])
        return value
    return None


def _read_secret(
    section: str, env_key: str, env: str | None, file_key: str, file: str | None, min_bytes: int
) -> bytes | None:
    """A secret from an environment variable or a file (None if neither is configured).
    Errors name the key and the variable or file, never the value."""
    if env is not None:
        value = os.environ.get(env)
        if not value:
            state = "is not set" if value is None else "is empty"
            raise ConfigError([f"{section}.{env_key}: environment variable {env} {state}"])
        if len(value.encode("utf-8")) < min_bytes:
            raise ConfigError([f"{section}.{env_key}: {env} holds fewer than {min_bytes} bytes"])
        return value.encode("utf-8")
    if file is not None:
        try:
            raw = Path(file).read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise ConfigError(
                [f"{section}.{file_key}: cannot read {file}: {exc.strerror}"]
            ) from None
        if not raw:
            raise ConfigError([f"{section}.{file_key}: {file} is empty"])
        if len(raw) < min_bytes:
            raise ConfigError([f"{section}.{file_key}: {file} holds fewer than {min_bytes} bytes"])
        return raw
    return None


def read_mask_hash_key(config: Config) -> bytes | None:
    """The key of the "hash" mask style, from ``masking.hash_key_env`` or ``hash_key_file``
    (None if neither is set); at least 16 bytes."""
    m = config.masking
    return _read_secret(
        "masking", "hash_key_env", m.hash_key_env, "hash_key_file", m.hash_key_file, 16
    )


def read_webhook_secret(config: Config) -> bytes | None:
    """The approvals webhook's HMAC key (None: requests are not signed)."""
    a = config.approvals
    return _read_secret(
        "approvals",
        "webhook_secret_env",
        a.webhook_secret_env,
        "webhook_secret_file",
        a.webhook_secret_file,
        1,
    )


def read_alerts_webhook_secret(config: Config) -> bytes | None:
    """The alerts webhook's HMAC key (None: alerts are not signed)."""
    a = config.alerts
    return _read_secret(
        "alerts",
        "webhook_secret_env",
        a.webhook_secret_env,
        "webhook_secret_file",
        a.webhook_secret_file,
        1,
    )


def policy_digest(config: Config) -> str:
    """SHA-256 (hex) of the canonical JSON of the policies; recorded in every session header."""
    return policies_digest(config.policies)


def policies_digest(policies: Sequence[Policy]) -> str:
    """SHA-256 (hex) of the canonical JSON of some policies (a session's, on reload)."""
    return hashlib.sha256(msgspec.json.encode(list(policies), order="sorted")).hexdigest()


def targets_allowed(config: Config, groups: Iterable[str]) -> set[str]:
    """Names of the targets a member of ``groups`` may reach (any matching policy grants)."""
    member_of = set(groups)
    all_names = {t.name for t in config.targets}
    allowed: set[str] = set()
    for policy in config.policies:
        if member_of.isdisjoint(policy.groups):
            continue
        if "*" in policy.targets:
            return all_names
        allowed.update(policy.targets)
    return allowed & all_names


def target_allowed(config: Config, target_name: str, groups: Iterable[str]) -> bool:
    return target_name in targets_allowed(config, groups)


def expiry_grace(config: Config) -> float:
    """Seconds a session outlives its token's ``exp``: ``auth.expiry_grace`` when set,
    else the older ``gateway.token_expiry_grace``."""
    grace = config.auth.expiry_grace
    return grace if grace is not None else config.gateway.token_expiry_grace
