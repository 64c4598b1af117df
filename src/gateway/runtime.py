"""Process-wide services shared by every session.

The composition root (server.py) builds one Runtime; session drivers reach
identity verification, authorization, recording and the cancel registry only
through it, so each feature is written once for both protocols.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .approvals import ApprovalBroker
from .audit import AuditService, SessionAudit
from .auth.jwt import AuthenticationFailed, TokenVerifier
from .config import (
    Config,
    ConfigError,
    Policy,
    Target,
    expiry_grace,
    load_config,
    policies_digest,
    policy_digest,
    read_mask_hash_key,
    read_target_password,
    target_allowed,
)
from .identity import Identity
from .lifecycle import Revocation, RevocationError, RevocationStore
from .lifecycle.control import Lifecycle
from .limits import LimitSpec, SessionLimits, UsageWindows, build_limit_spec
from .masking.detectors import CustomDetector
from .masking.lineage_cache import LineageCache
from .masking.rules import MaskPolicy, MaskSpec
from .masking.styles import Style
from .policy import PolicyEngine, PolicySpec, RuleSpec, SessionPolicy
from .reload import plan_reload
from .session.catalog_loader import CatalogUnavailable, TargetCatalog
from .session.errors import AccessRevoked, LoginRefused
from .session.limit_control import LimitControl
from .session.registry import SessionRegistry
from .session.target import UpstreamTarget

if TYPE_CHECKING:
    from .recording import Recorder, SessionRecording
    from .session.base import GatewaySession

log = logging.getLogger("gateway")
_session_log = logging.getLogger("gateway.session")  # where the drivers log sessions


@dataclass
class TargetRuntime:
    name: str
    config: Target
    upstream: UpstreamTarget


class Runtime:
    def __init__(
        self,
        config: Config,
        *,
        verifier: TokenVerifier,
        recorder: Recorder | None,
        server_tls: ssl.SSLContext,
    ) -> None:
        self.config = config
        # The file hot reload re-reads (the composition root sets it).
        self.config_path: Path | None = None
        # Listeners are up and no shutdown has begun (readiness; the composition root sets it).
        self.accepting = False
        self.verifier = verifier
        self.recorder = recorder
        self.server_tls = server_tls
        self.registry = SessionRegistry()
        self.policy_digest = policy_digest(config)
        # Counts successful reloads: a session started under another generation than the
        # one it chose its rules in was logging in during a reload (session_started).
        self.generation = 0
        self.targets = {t.name: make_target_runtime(t) for t in config.targets}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._engines: dict[tuple[tuple[str, ...], str], PolicyEngine] = {}
        self.mask_hash_key = read_mask_hash_key(config)
        self._mask_policies: dict[tuple[str, ...], MaskPolicy | None] = {}
        self._catalogs: dict[str, TargetCatalog] = {}
        self._lineage: dict[str, LineageCache] = {}
        self.counters: dict[str, int] = {"sessions": 0, "logins_refused": 0, "cancels": 0}
        # Approval requests of paused results and held statements (docs/approvals.md); the
        # composition root attaches the webhook notifier.
        self.approvals = ApprovalBroker(
            history=config.approvals.history,
            # Judged against the running configuration (hot reload): runtime.config.
            approver_groups=lambda: frozenset(g for p in self.config.policies for g in p.approvers),
        )
        self.usage = UsageWindows()
        self._limit_specs: dict[tuple[str, ...], LimitSpec | None] = {}
        # session id -> digest of the policies the session runs under (hot reload).
        self._session_policies: dict[str, str] = {}
        # Revocations and the kill switch (docs/operations.md). The list is read here, so
        # an unreadable file stops the gateway from starting (RevocationError).
        self.revocations = RevocationStore(Path(config.gateway.state_dir) / "revocations.json")
        self.revocations.load()
        self.lifecycle = Lifecycle(self.registry, self.revocations)
        self.expiry_grace = expiry_grace(config)
        # Audit log, Prometheus metrics and alerts (docs/audit-log.md, docs/alerts.md); the
        # composition root starts and closes it.
        self.audit = AuditService(config)
        self.audit.metrics.watch(
            self.audit.metrics.approvals_pending, lambda: len(self.approvals.pending())
        )
        if recorder is not None:
            self.audit.watch_recorder(recorder)

    # -- helpers ----------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run a background task, keeping a strong reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    @staticmethod
    def new_session_id() -> str:
        # Sortable by start time, unguessable, safe as a file name.
        return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(6)

    # -- readiness (docs/operations.md) ---------------------------------------------------

    def not_ready(self) -> list[str]:
        """Why the gateway should not get new sessions now; empty when it is ready."""
        reasons = []
        if not self.accepting:
            reasons.append("not accepting sessions (starting or shutting down)")
        if not self.verifier.jwks.loaded:
            reasons.append("no token signing keys (the issuer's JWKS could not be fetched)")
        if self.recorder is not None and not self.recorder.healthy:
            reasons.append("session recording is failing")
        return reasons

    # -- hot reload (docs/operations.md) ---------------------------------------------------

    def reload_config(self, live_sessions: str | None = None) -> dict[str, object]:
        """Re-read the configuration file (SIGHUP, ``POST /api/reload``) and apply what can
        change while sessions run. Raises ConfigError, with the old configuration still in
        force, when the file does not load or its policies do not build."""
        if self.config_path is None:
            raise ConfigError(["the gateway was not started from a configuration file"])
        return self.apply_config(load_config(self.config_path), live_sessions)

    def apply_config(self, new: Config, live_sessions: str | None = None) -> dict[str, object]:
        """Apply a new configuration (see gateway.reload): policies, masks, limits,
        approvers, alert thresholds, admin groups, and the revocation list, re-read.
        New sessions get the new policies. A live session whose identity may no longer use
        its target at all is ended; one whose applicable policies changed keeps the rules
        it started with, or is ended too when ``live_sessions`` (else the new file's
        ``gateway.reload_live_sessions``) is "end". Everything is built before anything is
        swapped, so a failure changes nothing."""
        plan = plan_reload(self.config, new)
        config = plan.config
        hash_key = read_mask_hash_key(config)
        errors: list[str] = []
        for i, policy in enumerate(config.policies):
            try:
                for dialect in ("postgres", "mysql"):
                    PolicyEngine.build([policy_spec(policy)], dialect)
                build_mask_policy([policy], hash_key)
                build_limit_spec([policy])
            except Exception as exc:  # a pattern or rule the new file names that cannot build
                errors.append(f"policies[{i}] ({policy.name}): {exc}")
        if errors:
            raise ConfigError(errors)
        try:
            self.revocations.load()
        except RevocationError as exc:
            raise ConfigError([f"revocations: {exc}"]) from None
        old_digest = self.policy_digest
        mode = live_sessions or config.gateway.reload_live_sessions
        self.config = config
        self.generation += 1
        self.policy_digest = policy_digest(config)
        self.mask_hash_key = hash_key
        self._engines.clear()
        self._mask_policies.clear()
        self._limit_specs.clear()
        self.audit.reconfigure(config)
        ended = self.lifecycle.enforce_all()
        for session in list(self.registry.sessions.values()):
            if session.session_id in ended:
                continue
            if self._lost_target(session) or (mode == "end" and self._policies_changed(session)):
                ended.append(session.session_id)
        report: dict[str, object] = {
            "changed": plan.changed,
            "restart_required": plan.restart_required,
            "policy_digest": self.policy_digest,
            "previous_policy_digest": old_digest,
            "sessions_ended": ended,
        }
        log.info("configuration reloaded", extra={"event": "config_reloaded", **report})
        self.audit.event("config_reloaded", **report)
        return report

    def _lost_target(self, session: GatewaySession) -> bool:
        """End a session whose identity no policy allows on its target any more (after a
        reload); True if it was ended."""
        identity = session.identity
        if identity is None or session.closing or self.target_allowed(session.target, identity):
            return False
        return self.kill_session(
            session.session_id,
            "no policy allows this identity on this target any more",
            "configuration reload",
        )

    def _policies_changed(self, session: GatewaySession) -> bool:
        """End a session whose applicable policies differ from those it runs under
        (``reload_live_sessions = "end"``); True if it was ended."""
        identity = session.identity
        if identity is None or session.closing:
            return False
        now = policies_digest(self.applicable_policies(session.target, identity))
        if self._session_policies.get(session.session_id, now) == now:
            return False
        return self.kill_session(
            session.session_id,
            "the policies of this session changed; reconnect to work under the new ones",
            "configuration reload",
        )

    # -- identity and authorization ----------------------------------------------------

    async def authenticate(self, token: str, client_user: str) -> Identity:
        try:
            identity = await self.verifier.verify(token)
        except AuthenticationFailed as exc:
            # The reason goes to our log, never to the client.
            log.info("token rejected", extra={"client_user": client_user, "reason": str(exc)})
            raise LoginRefused(
                "28P01",
                f'password authentication failed for user "{client_user}"',
                f"token rejected: {exc}",
            ) from None
        revocation = self.revocations.match(identity)
        if revocation is not None:
            log.info(
                "login refused: access revoked",
                extra={
                    "event": "login_refused",
                    "subject": identity.subject,
                    "client_user": client_user,
                    "revocation_id": revocation.id,
                    "revocation_kind": revocation.kind,
                },
            )
            raise AccessRevoked(f"access revoked ({revocation.id}, by {revocation.kind})")
        return identity

    def revoked(self, identity: Identity) -> str | None:
        """The id of a revocation in force for this identity (the admin API and the
        console refuse it), None when there is none."""
        revocation = self.revocations.match(identity)
        return revocation.id if revocation is not None else None

    def target_allowed(self, target: TargetRuntime, identity: Identity) -> bool:
        return target_allowed(self.config, target.name, identity.groups)

    def applicable_policies(self, target: TargetRuntime, identity: Identity) -> list[Policy]:
        """The policies that let this identity reach this target, in config order."""
        groups = set(identity.groups)
        return [
            p
            for p in self.config.policies
            if groups.intersection(p.groups) and (target.name in p.targets or "*" in p.targets)
        ]

    def session_policy(self, target: TargetRuntime, identity: Identity) -> SessionPolicy:
        """The statement policy of a new session: the union of the policies that let
        this identity reach this target (docs/policy.md). Engines, and their decision
        caches, are shared by every session with the same policies and dialect."""
        policies = self.applicable_policies(target, identity)
        dialect = "mysql" if target.config.protocol == "mysql" else "postgres"
        key = (tuple(p.name for p in policies), dialect)
        engine = self._engines.get(key)
        if engine is None:
            engine = PolicyEngine.build([policy_spec(p) for p in policies], dialect)
            self._engines[key] = engine
        return engine.session()

    # -- limits ---------------------------------------------------------------------------

    def session_limits(self, target: TargetRuntime, identity: Identity) -> SessionLimits | None:
        """The result limits of a new session (docs/limits.md), None when none apply. The
        identity's rolling window is shared by all its sessions in this process."""
        policies = self.applicable_policies(target, identity)
        key = tuple(p.name for p in policies)
        if key not in self._limit_specs:
            self._limit_specs[key] = build_limit_spec(policies)
        spec = self._limit_specs[key]
        if spec is None:
            return None
        window = self.usage.for_identity(identity.subject, spec.window) if spec.windowed else None
        return SessionLimits(spec, window)

    def limit_control(
        self,
        session: GatewaySession,
        target: TargetRuntime,
        identity: Identity,
        recording: SessionRecording | None,
    ) -> LimitControl:
        """A new session's limits and approvals: its SessionLimits (None when no limit
        applies) and who may approve its statements under review (the approvers of every
        applicable policy with review entries; the shortest timeout)."""
        applicable = self.applicable_policies(target, identity)
        # What this session runs under (a hot reload with reload_live_sessions = "end"
        # ends it if that changes); set at login and at a MySQL COM_CHANGE_USER.
        self._session_policies[session.session_id] = policies_digest(applicable)
        reviewing = [p for p in applicable if p.review]
        return LimitControl(
            limits=self.session_limits(target, identity),
            broker=self.approvals,
            session_id=session.session_id,
            identity=identity,
            target=target.name,
            recording=recording,
            review_approvers=frozenset(g for p in reviewing for g in p.approvers),
            review_timeout=min((p.approval_timeout for p in reviewing), default=300.0),
            audit=session.audit,
        )

    # -- masking ----------------------------------------------------------------------------

    def mask_policy(self, target: TargetRuntime, identity: Identity) -> MaskPolicy | None:
        """The masks of a new session (the union of its policies'), None if there are none.
        Shared by every session with the same policies."""
        policies = self.applicable_policies(target, identity)
        key = tuple(p.name for p in policies)
        if key not in self._mask_policies:
            self._mask_policies[key] = build_mask_policy(policies, self.mask_hash_key)
        return self._mask_policies[key]

    def target_catalog(self, target: TargetRuntime) -> TargetCatalog:
        catalog = self._catalogs.get(target.name)
        if catalog is None:
            catalog = self._catalogs[target.name] = TargetCatalog(
                target.upstream,
                target.config.protocol,
                self.config.masking.catalog_refresh,
            )
        return catalog

    def lineage_cache(self, target: TargetRuntime) -> LineageCache:
        cache = self._lineage.get(target.name)
        if cache is None:
            dialect = "mysql" if target.config.protocol == "mysql" else "postgres"
            cache = self._lineage[target.name] = LineageCache(dialect)
        return cache

    async def masking_catalog(self, target: TargetRuntime) -> TargetCatalog:
        """The target's catalog, loaded; a session with masks cannot start without it."""
        catalog = self.target_catalog(target)
        try:
            await catalog.ready()
        except CatalogUnavailable as exc:
            raise LoginRefused(
                "57P03",
                "masking applies to this session and the gateway cannot read the target's "
                "column catalog; try again later",
                f"masking catalog unavailable: {exc}",
            ) from None
        return catalog

    def record_rows(self, target: TargetRuntime, identity: Identity) -> int:
        """Rows recorded per statement: the largest cap of the policies that apply."""
        return max(
            (p.record_rows for p in self.applicable_policies(target, identity)), default=1000
        )

    def allow_rule(self, target: TargetRuntime, identity: Identity) -> str | None:
        """The rule recorded for an allowed execution whose statement-level decision the
        recording does not know (a SQL-level cursor's portal): the policies granting
        access to the target."""
        names = [p.name for p in self.applicable_policies(target, identity)]
        return "policy:" + ",".join(names) if names else None

    # -- audit log -------------------------------------------------------------------------

    def session_audit(
        self, session: GatewaySession, target: TargetRuntime, identity: Identity
    ) -> SessionAudit:
        """What a session's drivers report each statement to (audit line, metrics, alerts)."""
        policy = self.session_policy(target, identity)
        return self.audit.session(
            session.session_id,
            identity,
            target.name,
            target.config.protocol,
            session.peer,
            policy.engine.analyse,
        )

    # -- recording ------------------------------------------------------------------------

    def open_recording(
        self, session: GatewaySession, identity: Identity
    ) -> SessionRecording | None:
        if self.recorder is None:
            return None
        from .recording import SessionStartInfo

        info = SessionStartInfo(
            session_id=session.session_id,
            subject=identity.subject,
            groups=tuple(identity.groups),
            token_id=identity.token_id,
            token_expires_at=identity.expires_at,
            target=session.target.name,
            protocol=session.target.config.protocol,
            client_address=session.peer,
            tls=session.client.tls_info(),
            gateway_version=__version__,
            policy_digest=self.policy_digest,
            upstream_user=session.target.upstream.user,
            started_at=session.started,
        )
        return self.recorder.open_session(info)

    # -- cancel ---------------------------------------------------------------------------

    def handle_cancel(self, process_id: int, secret: bytes) -> None:
        session = self.registry.find_by_cancel_key(process_id, secret)
        if session is None:
            log.info("cancel request with an unknown key ignored")
            return
        self.counters["cancels"] += 1
        session.cancel_query()

    # -- live sessions and the kill switch (docs/operations.md) --------------------------

    def live_sessions(self) -> list[dict[str, object]]:
        """One dict per live session: session_id, subject, groups, target, protocol,
        client, since, statements, rows, bytes (to the client), current_statement."""
        return self.lifecycle.live_sessions()

    def kill_session(self, session_id: str, reason: str, by: str) -> bool:
        """End one live session as an administrator; False if there is no such session."""
        return self.lifecycle.kill_session(session_id, reason, by)

    def end_sessions_matching(self, revocation: Revocation) -> list[str]:
        """End every live session a revocation matches; the ids of those ended."""
        return self.lifecycle.end_matching(revocation)

    def reload_revocations(self) -> list[str]:
        """Re-read revocations.json (hot reload) and end the live sessions it now matches;
        RevocationError, keeping the old list, if the file is unusable."""
        return self.lifecycle.reload()

    # -- session events (structured log lines) ---------------------------------------------

    def session_started(self, session: GatewaySession, identity: Identity) -> None:
        self.counters["sessions"] += 1
        self.audit.session_started(session.target.name)
        self.audit.event(
            "session_start",
            session_id=session.session_id,
            subject=identity.subject,
            groups=list(identity.groups),
            target=session.target.name,
            protocol=session.target.config.protocol,
            client=session.peer,
            tls=session.client.tls_info().get("version", "none"),
        )
        log.info(
            "session start",
            extra={
                "event": "session_start",
                "session_id": session.session_id,
                "subject": identity.subject,
                "groups": list(identity.groups),
                "target": session.target.name,
                "client": session.peer,
                "tls": session.client.tls_info().get("version", "none"),
                **session.summary(),
            },
        )
        if self.revocations.match(identity) is not None:
            # Revoked while it was logging in (after its token was checked): ended as
            # soon as the driver has finished starting it.
            asyncio.get_running_loop().call_soon(
                self.lifecycle.check_new_session, session, identity
            )
        elif not self.target_allowed(session.target, identity):
            # A reload while it was logging in (after its target was checked) took the
            # target away: ended like the live sessions that reload ended.
            asyncio.get_running_loop().call_soon(self._lost_target, session)
        elif session.policy_generation != self.generation:
            # A reload while it was logging in: its masks may come from the old
            # configuration and its statement policy and limits from the new one. Ended
            # rather than run under a mix that no configuration describes.
            asyncio.get_running_loop().call_soon(self._reloaded_during_login, session)

    def _reloaded_during_login(self, session: GatewaySession) -> None:
        if not session.closing:
            self.kill_session(
                session.session_id,
                "the gateway's configuration was reloaded while this session logged in; "
                "reconnect to work under the new one",
                "configuration reload during login",
            )

    def session_ended(self, session: GatewaySession) -> None:
        self._session_policies.pop(session.session_id, None)
        self.audit.session_ended(session.target.name)
        self.audit.event(
            "session_end",
            session_id=session.session_id,
            subject=session.identity_subject,
            target=session.target.name,
            client=session.peer,
            reason=session.end_reason,
            duration_s=round(time.time() - session.started, 3),
            **session.summary(),
        )
        log.info(
            "session end",
            extra={
                "event": "session_end",
                "session_id": session.session_id,
                "subject": session.identity_subject,
                "target": session.target.name,
                "client": session.peer,
                "reason": session.end_reason,
                "duration_s": round(time.time() - session.started, 3),
                "bytes_from_client": session.client.bytes_in,
                **session.summary(),
            },
        )

    def login_refused(
        self,
        target: TargetRuntime,
        sqlstate: str,
        *,
        session_id: str | None = None,
        client: str | None = None,
        detail: str = "",
        subject: str | None = None,
        errno: int | None = None,
    ) -> None:
        """A login the gateway refused (both protocols): logged, counted, audited."""
        fields: dict[str, object] = {
            "session_id": session_id,
            "client": client,
            "target": target.name,
            "sqlstate": sqlstate,
            "detail": detail,
            "subject": subject,
        }
        if errno is not None:
            fields["errno"] = errno
        _session_log.info("login refused", extra=fields)
        self.counters["logins_refused"] += 1
        # The detail is only categorised: it never reaches the audit log or a metric.
        self.audit.login_refused(target.name, sqlstate, client, detail, subject)


def make_target_runtime(target: Target) -> TargetRuntime:
    return TargetRuntime(
        name=target.name,
        config=target,
        upstream=UpstreamTarget(
            name=target.name,
            host=target.host,
            port=target.port,
            database=target.database,
            user=target.user,
            password=read_target_password(target),
            tls_mode=target.tls,
            tls_ca_file=target.tls_ca_file,
            tls_server_name=target.tls_server_name,
            connect_timeout=target.connect_timeout,
        ),
    )


def build_mask_policy(policies: list[Policy], hash_key: bytes | None) -> MaskPolicy | None:
    """The union of the policies' masks (docs/masking.md); None when there are none. The
    strictest setting of ``on_unknown_lineage`` / ``on_unmaskable`` wins."""
    specs = [
        MaskSpec(
            source=f"{p.name}.masks[{i}]",
            columns=tuple(m.columns),
            detectors=tuple(m.detectors),
            style=Style(
                m.style,
                keep_last=m.keep_last if m.keep_last is not None else 4,
                value=m.value or "",
                hash_key=hash_key if m.style == "hash" and hash_key is not None else b"",
            ),
        )
        for p in policies
        for i, m in enumerate(p.masks)
    ]
    if not specs:
        return None
    custom: dict[str, CustomDetector] = {}
    for p in policies:
        for d in p.detectors:
            custom.setdefault(d.name, CustomDetector(d.name, d.pattern, d.validator))
    return MaskPolicy(
        specs,
        list(custom.values()),
        on_unknown_lineage="deny"
        if any(p.on_unknown_lineage == "deny" for p in policies)
        else "mask",
        on_unmaskable="deny" if any(p.on_unmaskable == "deny" for p in policies) else "null",
    )


def policy_spec(policy: Policy) -> PolicySpec:
    """The statement part of a configured policy, for the policy engine."""
    return PolicySpec(
        name=policy.name,
        allow=tuple(policy.allow),
        deny=tuple(policy.deny),
        review=tuple(policy.review),
        rules=tuple(
            RuleSpec(
                name=r.name,
                classes=tuple(r.classes),
                kinds=tuple(r.kinds),
                tables=tuple(r.tables),
                functions=tuple(r.functions),
                schemas=tuple(r.schemas),
            )
            for r in policy.rules
        ),
    )
