"""Loading a target's column catalog on a side connection, and keeping it fresh.

Why a side connection: catalog queries on the client's own session would change what the
client sees (transaction state, ``lastval()``, statement counters) and could fail inside an
aborted transaction (PROTOCOLS.md 2.8). The side connection logs in with the target's stored
credentials, reads, and closes.

Freshness rules (issue 6: "cached per target, refreshed on DDL and on a timer"):

* One snapshot per target, shared by every session. Sessions with masks wait for the first
  load at login; if it fails, their login is refused (masking cannot fail open).
* A reload is requested after any DDL statement completes, whenever a result names a table
  or column the snapshot does not know, and when the snapshot is older than
  ``masking.catalog_refresh``. Reloads are single-flight and run in the background: until the
  new snapshot lands, sessions plan with the old one, in which the unknown table is masked
  whole (over-masking for a moment, never under-masking).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from protocols.mysql.constants import ERR_HEADER, Capability
from protocols.mysql.framing import build_packets
from protocols.mysql.packets import (
    is_terminator,
    parse_err_packet,
    read_lenenc_int,
    read_lenenc_string_or_null,
)
from protocols.postgres.framing import build_message
from protocols.postgres.messages import parse_error_fields
from protocols.postgres.rows import parse_data_row

from ..masking.catalog import Catalog, build_catalog
from ..net.leg import Leg
from . import mysql_upstream, pg_upstream
from .target import UpstreamTarget

log = logging.getLogger("gateway.masking")

__all__ = ["CatalogUnavailable", "TargetCatalog", "load_mysql_catalog", "load_pg_catalog"]

_MAX_MESSAGE = 64 * 1024 * 1024

# Ordinary tables, views, materialized views, partitioned and foreign tables: everything a
# RowDescription can name as a column's source. System schemas hold no user data.
_PG_COLUMNS = """
SELECT c.oid::int8, n.nspname, c.relname, a.attnum, a.attname
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f')
  AND a.attnum > 0 AND NOT a.attisdropped
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%'
ORDER BY c.oid, a.attnum
"""
_PG_VIEWS = """
SELECT n.nspname, c.relname, pg_catalog.pg_get_viewdef(c.oid)
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('v', 'm')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
"""
# The schemas unqualified names resolve to for the gateway's role (the role sessions use).
_PG_SEARCH_PATH = "SELECT pg_catalog.array_to_string(pg_catalog.current_schemas(false), ',')"

_MY_SYSTEM = "('mysql', 'information_schema', 'performance_schema', 'sys')"
_MY_COLUMNS = (
    "SELECT TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION, COLUMN_NAME "
    "FROM information_schema.COLUMNS "
    f"WHERE TABLE_SCHEMA NOT IN {_MY_SYSTEM} "
    "ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION"
)
_MY_VIEWS = (
    "SELECT TABLE_SCHEMA, TABLE_NAME, VIEW_DEFINITION FROM information_schema.VIEWS "
    f"WHERE TABLE_SCHEMA NOT IN {_MY_SYSTEM}"
)


class CatalogUnavailable(Exception):
    """The catalog could not be loaded; the message is for logs (it names no secret)."""


# ------------------------------------------------------------------------- PostgreSQL


async def _pg_query(leg: Leg, sql: str) -> list[list[bytes | None]]:
    leg.write(build_message(ord("Q"), sql.encode() + b"\x00"))
    rows: list[list[bytes | None]] = []
    error: str | None = None
    while True:
        mtype, body = await leg.read_typed_message(_MAX_MESSAGE)
        if mtype == ord("D"):
            rows.append(parse_data_row(body))
        elif mtype == ord("E"):
            fields = parse_error_fields(body)
            error = f"{fields.get('C', '')} {fields.get('M', '')}"
        elif mtype == ord("Z"):
            break
    if error is not None:
        raise CatalogUnavailable(f"catalog query failed: {error}")
    return rows


def _text(value: bytes | None) -> str:
    return (value or b"").decode("utf-8", "surrogateescape")


async def load_pg_catalog(target: UpstreamTarget, version: int) -> Catalog:
    try:
        conn = await pg_upstream.connect_upstream(
            target, {"application_name": "db-gateway catalog"}, _MAX_MESSAGE
        )
    except pg_upstream.UpstreamError as exc:
        raise CatalogUnavailable(exc.detail) from None
    leg = conn.leg
    try:
        columns = await _pg_query(leg, _PG_COLUMNS)
        path = await _pg_query(leg, _PG_SEARCH_PATH)
        # View texts with every name schema-qualified: lineage reads them with the
        # session's search path, which may differ from the view owner's.
        await _pg_query(leg, "SET search_path = ''")
        views = await _pg_query(leg, _PG_VIEWS)
        leg.write(build_message(ord("X"), b""))
    except (ConnectionError, OSError) as exc:
        raise CatalogUnavailable(f"catalog connection failed: {exc}") from None
    finally:
        leg.close()
    search_path = tuple(s for s in _text(path[0][0] if path else b"").split(",") if s)
    return build_catalog(
        version,
        (
            (int(_text(r[0])), _text(r[1]), _text(r[2]), int(_text(r[3])), _text(r[4]))
            for r in columns
        ),
        ((_text(r[0]), _text(r[1]), _text(r[2])) for r in views),
        search_path,
    )


# ------------------------------------------------------------------------------- MySQL


async def _my_query(leg: Leg, capabilities: int, sql: str) -> list[list[bytes | None]]:
    framed, _ = build_packets(b"\x03" + sql.encode(), 0)
    leg.write(framed)
    read = mysql_upstream.read_packet
    _, first = await read(leg, 1, _MAX_MESSAGE)
    if first[:1] == bytes((ERR_HEADER,)):
        err = parse_err_packet(first)
        raise CatalogUnavailable(f"catalog query failed: {err.errno} {err.text!r}")
    count, _ = read_lenenc_int(first, 0)
    for _ in range(count):
        await read(leg, None, _MAX_MESSAGE)  # column definitions
    if not capabilities & Capability.CLIENT_DEPRECATE_EOF:
        await read(leg, None, _MAX_MESSAGE)
    rows: list[list[bytes | None]] = []
    while True:
        _, payload = await read(leg, None, _MAX_MESSAGE)
        if is_terminator(payload):
            return rows
        if payload[:1] == bytes((ERR_HEADER,)):
            err = parse_err_packet(payload)
            raise CatalogUnavailable(f"catalog query failed: {err.errno} {err.text!r}")
        row: list[bytes | None] = []
        pos = 0
        for _ in range(count):
            value, pos = read_lenenc_string_or_null(payload, pos)
            row.append(None if value is None else bytes(value))
        rows.append(row)


async def load_mysql_catalog(target: UpstreamTarget, version: int) -> Catalog:
    request = mysql_upstream.LoginRequest(
        capabilities=int(
            Capability.CLIENT_PROTOCOL_41
            | Capability.CLIENT_SECURE_CONNECTION
            | Capability.CLIENT_PLUGIN_AUTH
            | Capability.CLIENT_TRANSACTIONS
        ),
        charset=45,  # utf8mb4_general_ci: names come back as UTF-8
        max_packet_size=1 << 24,
        database=None,
        connect_attrs=(),
    )
    try:
        conn = await mysql_upstream.connect_upstream(target, request)
    except mysql_upstream.UpstreamError as exc:
        raise CatalogUnavailable(exc.detail) from None
    leg = conn.leg
    try:
        columns = await _my_query(leg, conn.capabilities, _MY_COLUMNS)
        views = await _my_query(leg, conn.capabilities, _MY_VIEWS)
        framed, _ = build_packets(b"\x01", 0)  # COM_QUIT
        leg.write(framed)
    except (ConnectionError, OSError) as exc:
        raise CatalogUnavailable(f"catalog connection failed: {exc}") from None
    finally:
        leg.close()
    return build_catalog(
        version,
        ((0, _text(r[0]), _text(r[1]), int(_text(r[2])), _text(r[3])) for r in columns),
        ((_text(r[0]), _text(r[1]), _text(r[2])) for r in views),
        (),  # MySQL: the session's current database, set per session
    )


# ------------------------------------------------------------------------ the cache

Loader = Callable[[UpstreamTarget, int], Awaitable[Catalog]]


class TargetCatalog:
    """The shared, refreshed catalog snapshot of one target."""

    def __init__(self, target: UpstreamTarget, protocol: str, refresh_interval: float) -> None:
        self.target = target
        self.refresh_interval = refresh_interval
        self._loader: Loader = load_mysql_catalog if protocol == "mysql" else load_pg_catalog
        self.snapshot: Catalog | None = None
        self._loaded_at = 0.0
        self._version = 0
        self._task: asyncio.Task[Catalog] | None = None
        self._again = False
        self.loads = 0

    async def ready(self) -> Catalog:
        """The current snapshot, loading it first if there is none (raises CatalogUnavailable)."""
        snapshot = self.snapshot
        if snapshot is not None:
            self.current()  # schedules a timed reload when due
            return snapshot
        return await asyncio.shield(self._start())

    def current(self) -> Catalog | None:
        """The snapshot to plan with now; schedules a reload when it is older than allowed."""
        if self.snapshot is not None and time.monotonic() - self._loaded_at > self.refresh_interval:
            self.invalidate()
        return self.snapshot

    def invalidate(self) -> None:
        """Reload in the background (after DDL, or a table the snapshot does not know)."""
        if self._task is not None and not self._task.done():
            self._again = True  # the running load may predate the change
            return
        self._start()

    def _start(self) -> asyncio.Task[Catalog]:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._load())
        return self._task

    async def _load(self) -> Catalog:
        while True:
            self._again = False
            self._version += 1
            try:
                snapshot = await self._loader(self.target, self._version)
            except CatalogUnavailable as exc:
                log.warning(
                    "masking catalog load failed",
                    extra={"target": self.target.name, "detail": str(exc)},
                )
                if self.snapshot is None:
                    raise
                return self.snapshot  # keep planning with the old one; retried on demand
            except Exception as exc:
                log.exception("masking catalog load failed", extra={"target": self.target.name})
                if self.snapshot is None:
                    raise CatalogUnavailable(f"catalog load failed: {exc!r}") from None
                return self.snapshot
            self.snapshot = snapshot
            self._loaded_at = time.monotonic()
            self.loads += 1
            if not self._again:
                return snapshot
