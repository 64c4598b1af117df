"""Hot reload (docs/operations.md, "Reloading the configuration").

SIGHUP or ``POST /api/reload`` re-reads the configuration file. What can change while
sessions run is taken from the new file; what cannot (listeners, targets, TLS, the token
issuer, the recorder, the audit file, webhooks) keeps its running value and is reported as
needing a restart. A new file that does not load, or whose policies do not build, is
rejected as a whole: the old configuration stays in force.

This module only computes the configuration to apply (``plan_reload``); the runtime
applies it (``Runtime.apply_config``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from .config import Config, ConfigError

# Keys of each section that take effect on reload; None: the whole section. Sections not
# named here need a restart.
RELOADABLE: Final[dict[str, frozenset[str] | None]] = {
    "policies": None,
    # What a reload does to live sessions (read from the new file at each reload).
    "gateway": frozenset({"reload_live_sessions"}),
    # The catalog refresh period is fixed when a target's catalog is first loaded.
    "masking": frozenset({"hash_key_env", "hash_key_file"}),
    # The alert webhook's transport is built at start.
    "alerts": frozenset(
        {
            "enabled",
            "window",
            "cooldown",
            "large_result_rows",
            "large_results",
            "rows",
            "denied",
            "approval_requests",
            "auth_failures",
            "sensitive_tables",
            "sensitive_masked_tables",
        }
    ),
    "audit": frozenset({"redact_literals"}),
    # Who may use the admin API and the console; the listener itself needs a restart.
    "admin": frozenset({"groups", "auditor_groups"}),
}


@dataclass
class ReloadPlan:
    config: Config  # the configuration to run with from now on
    changed: list[str] = field(default_factory=list)  # sections whose new values apply
    restart_required: list[str] = field(default_factory=list)  # "section.key" kept as is


def plan_reload(running: Config, new: Config) -> ReloadPlan:
    """The configuration to apply: ``running`` with every reloadable key taken from
    ``new``. Raises ConfigError when the result would be inconsistent (a policy naming a
    target that only a restart would add)."""
    updates: dict[str, Any] = {}
    plan = ReloadPlan(running)
    for name in msgspec.structs.fields(Config):
        key = name.name
        old_value, new_value = getattr(running, key), getattr(new, key)
        if old_value == new_value:
            continue
        if key not in RELOADABLE:
            plan.restart_required.append(key)
            continue
        keys = RELOADABLE[key]
        if keys is None:
            updates[key] = new_value
            plan.changed.append(key)
            continue
        if old_value is None or new_value is None:
            # A section added or removed ([admin]): a listener starts or stops.
            plan.restart_required.append(key)
            continue
        taken = {
            k: getattr(new_value, k) for k in keys if getattr(new_value, k) != getattr(old_value, k)
        }
        if taken:
            updates[key] = msgspec.structs.replace(old_value, **taken)
            plan.changed.extend(f"{key}.{k}" for k in sorted(taken))
        plan.restart_required.extend(
            f"{key}.{f.name}"
            for f in msgspec.structs.fields(type(old_value))
            if f.name not in keys and getattr(new_value, f.name) != getattr(old_value, f.name)
        )
    plan.config = msgspec.structs.replace(running, **updates)
    known = {t.name for t in running.targets}
    errors = [
        f"policies[{i}].targets: target {name!r} is not running; adding a target needs a restart"
        for i, policy in enumerate(plan.config.policies)
        for name in policy.targets
        if name != "*" and name not in known
    ]
    if errors:
        raise ConfigError(errors)
    return plan
