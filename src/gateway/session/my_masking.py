"""Masking on the MySQL / MariaDB wire: plan each result set once from its column
definitions, rewrite its text or binary rows.

A column's source is in its ColumnDefinition (schema, org_table, org_name); a table the
catalog does not know (a derived table's alias, a temporary table, one created since the
last load) is masked whole. Lineage resolves unqualified names against the session's
current database, followed from the login, COM_INIT_DB and ``USE`` statements. Statement
time decisions are the shared ones (``masking_common``). A result that cannot be masked
(``on_unmaskable = "deny"``, or rows of 16 MiB or more) is refused: the driver answers ERR
in place of its rows and drops the rest of the result.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final, cast

from protocols.mysql.constants import ColumnType
from protocols.mysql.packets import build_err_packet, parse_err_packet
from protocols.mysql.resultset import ColumnDefinition41

from ..masking.catalog import UNKNOWN
from ..masking.my_values import charset_codec, my_binary_mask, my_text_mask
from ..masking.plan import ResultPlan, column_masks, detector_rewriter
from .masking_common import MISS, NAME_ERRORS, MaskingSession, PlanCache

if TYPE_CHECKING:
    from ..masking.lineage_cache import LineageCache
    from ..masking.rules import MaskPolicy
    from ..policy.lineage import StatementLineage
    from .catalog_loader import TargetCatalog

__all__ = ["MyMasking"]

_BINARY_CHARSET: Final = 63
_STRING_TYPES: Final = frozenset(
    {
        ColumnType.MYSQL_TYPE_VARCHAR,
        ColumnType.MYSQL_TYPE_VAR_STRING,
        ColumnType.MYSQL_TYPE_STRING,
        ColumnType.MYSQL_TYPE_TINY_BLOB,
        ColumnType.MYSQL_TYPE_MEDIUM_BLOB,
        ColumnType.MYSQL_TYPE_LONG_BLOB,
        ColumnType.MYSQL_TYPE_BLOB,
        ColumnType.MYSQL_TYPE_JSON,
    }
)
_USE: Final = re.compile(rb"\s*use\s+`?([A-Za-z0-9_$]+)`?\s*;?\s*", re.IGNORECASE)
# SHOW WARNINGS / SHOW ERRORS return server messages as rows; the messages quote values of
# earlier statements ("Truncated incorrect DOUBLE value: '123-45-6789'"), so their lineage
# is unknown: masked whole (or refused) in sessions with column masks.
_DIAGNOSTICS: Final = re.compile(
    rb"\s*show\s+(?:count\s*\(\s*\*\s*\)\s+)?(?:warnings|errors)\b", re.I
)


def _name(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


class MyMasking(MaskingSession):
    __slots__ = ("_plans", "database")

    def __init__(
        self, policy: MaskPolicy, catalog: TargetCatalog, lineage: LineageCache, database: str
    ) -> None:
        super().__init__(policy, catalog, lineage)
        self.database = database
        self._plans = PlanCache()

    @property
    def search_path(self) -> tuple[str, ...]:
        return (self.database,) if self.database else ()

    def statement_sent(self, sql: bytes) -> None:
        """A COM_QUERY text: ``USE db`` changes where unqualified names resolve."""
        m = _USE.fullmatch(sql)
        if m is not None:
            self.database = _name(m.group(1))

    def init_db(self, schema: bytes) -> None:
        self.database = _name(schema)

    def scrub_err(self, payload: bytes, sql: bytes | None) -> bytes | None:
        """An ERR packet payload with values hidden from its message, or None if unchanged."""
        err = parse_err_packet(payload)
        text = None if sql is None else sql.decode("utf-8", "replace")
        message = self.scrub_message(
            err.text, text, f"{err.errno} ({err.sqlstate})", str(err.errno) in NAME_ERRORS
        )
        if message is None:
            return None
        return build_err_packet(err.errno, err.sqlstate, message)

    def plan(
        self,
        text: bytes | None,
        index: int,
        columns: tuple[ColumnDefinition41, ...] | None,
        binary: bool,
    ) -> ResultPlan | None:
        """The row plan of one result set (None: pass through)."""
        if columns is None:
            return ResultPlan((), (), refusal="result columns were not described")
        snapshot = self._snapshot()
        key = (text, index, columns, binary, snapshot.version, self.database)
        plans = self._plans
        kept = plans.hit(key)
        if kept is not MISS:
            return cast("ResultPlan | None", kept)
        statements = None
        if text is not None and self.policy.has_column_rules and not _DIAGNOSTICS.match(text):
            statements = self._statements(text.decode("utf-8", "replace"))
        return plans.resolve(
            key,
            statements,
            (index, columns, binary, snapshot.version, self.database),
            lambda: self._build(index, columns, binary, statements),
            self.catalog.invalidate,
        )

    def _build(
        self,
        index: int,
        columns: tuple[ColumnDefinition41, ...],
        binary: bool,
        statements: tuple[StatementLineage, ...] | None,
    ) -> ResultPlan | None:
        snapshot = self._snapshot()
        sources: list[object] = []
        for col in columns:
            if not col.org_table:
                sources.append(None)
                continue
            schema, table = _name(col.schema), _name(col.org_table)
            if (schema, table) in snapshot.columns:
                sources.append((schema, table, _name(col.org_name)))
            else:
                sources.append(UNKNOWN)
        # Results are matched to statements by position, one result (or OK) each. A
        # statement the lineage cannot follow (CALL, EXECUTE: any number of results) may
        # shift every later one: those are planned as unknown (masked whole).
        lineage = None
        if (
            statements is not None
            and index < len(statements)
            and not any(st.outputs is None or st.unresolved for st in statements[:index])
        ):
            lineage = statements[index]
        text_columns = [c.type in _STRING_TYPES and c.charset != _BINARY_CHARSET for c in columns]
        plans = column_masks(sources, lineage, self.policy, text_columns)
        if plans is None:
            return None
        rewriters = []
        refusal = None
        make = my_binary_mask if binary else my_text_mask
        for i, (col, column) in enumerate(zip(columns, plans, strict=True)):
            if column.mask is not None:
                masker = make(
                    col.type, col.flags, col.charset, col.column_length, column.mask.style
                )
                if not masker.exact and self.policy.on_unmaskable == "deny":
                    refusal = (
                        f"result refused by the gateway: column '{_name(col.name)}' is masked "
                        "and its type cannot carry a masked value"
                    )
                rewriters.append((i, masker.apply))
            elif column.detectors:
                codec = charset_codec(col.charset)[0]
                rewriters.append(
                    (
                        i,
                        detector_rewriter(
                            self.policy,
                            codec,
                            json_value=col.type == ColumnType.MYSQL_TYPE_JSON
                            or col.extended_format_name == b"json",
                            jsonb_binary=False,
                        ).whole,
                    )
                )
        return ResultPlan(
            tuple(rewriters),
            plans,
            refusal,
            unknown_sources=UNKNOWN in sources,
            column_count=len(columns),
            types=tuple(c.type for c in columns) if binary else None,
        )
