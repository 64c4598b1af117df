"""Masking on the PostgreSQL wire: plan each result once, rewrite its DataRows, scrub what
else can carry a value (ErrorResponse / NoticeResponse fields, NotificationResponse
payloads), refuse what cannot be masked.

Where each decision happens:

* Statement time (Query / Parse, after the statement policy allowed it): COPY ... TO and
  other exports are refused while masks apply (COPY output has no RowDescription to plan
  with, PROTOCOLS.md 2.10); statements that copy masked values into another table are
  refused (or ``SELECT`` from that table later would show them unmasked); with
  ``on_unknown_lineage = "deny"``, statements whose lineage is unknown and may read a masked
  column are refused. A fast-path FunctionCall is refused: its result has no description.
* Result time (the first DataRow of a result, or its RowDescription): ``plan`` builds the
  row plan from the RowDescription (statement's, combined with the Bind result formats, or
  the portal's), the catalog and the statement's lineage. Plans are cached per
  (text, description, formats, statement index). A result whose columns the gateway never
  saw described cannot be masked type-correctly: it is refused.
* Refusing a result (``ResultPlan.refusal``): the driver replaces the rows with an
  ErrorResponse and drops every other server message up to ReadyForQuery, which it
  forwards: the client sees the error its protocol state expects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, cast

from protocols.postgres.framing import build_message
from protocols.postgres.messages import parse_error_fields
from protocols.postgres.rows import ScreenedValue, parse_row_description
from protocols.postgres.tracker import Execution

from ..masking.catalog import UNKNOWN, Catalog
from ..masking.pg_values import pg_column_mask, python_codec
from ..masking.plan import (
    JSON_OIDS,
    TEXT_LIKE_OIDS,
    ResultPlan,
    column_masks,
    detector_rewriter,
)
from ..masking.styles import REDACTED
from .masking_common import MISS, NAME_ERRORS, MaskingSession, PlanCache, withheld_message

if TYPE_CHECKING:
    from ..masking.lineage_cache import LineageCache
    from ..masking.rules import MaskPolicy
    from ..policy.lineage import StatementLineage
    from .catalog_loader import TargetCatalog

__all__ = ["NO_MASK", "PgMasking"]

_JSONB: Final = 3802


class _NoMask:
    __slots__ = ()


NO_MASK: Final = _NoMask()  # Execution.mask_plan when the result is passed through

_NOT_DESCRIBED: Final = (
    "result refused by the gateway: masking applies to this session and this result's "
    "columns were never described; Describe the statement or portal before Execute"
)
_DETAIL_HIDDEN: Final = "detail hidden by the gateway: the statement reads masked columns"
# Fields that can quote values: message, detail, hint, context, internal query.
_SCRUBBED_FIELDS: Final = frozenset("MDHWq")


class PgMasking(MaskingSession):
    """One PostgreSQL session's masking state."""

    __slots__ = ("_plans", "codec")

    def __init__(self, policy: MaskPolicy, catalog: TargetCatalog, lineage: LineageCache) -> None:
        super().__init__(policy, catalog, lineage)
        self.codec = "utf-8"
        self._plans = PlanCache()

    def client_encoding(self, value: str) -> None:
        self.codec = python_codec(value)
        self._plans.clear()

    def ready_for_query(self, status: int) -> None:
        """ReadyForQuery with nothing pending; 'I': outside a transaction block."""
        self.statement_done(in_transaction=status != 0x49)

    # --------------------------------------------------------------------- result time

    def plan(self, ex: Execution) -> ResultPlan | None:
        """The row plan of ``ex``'s current result (None: pass through); stored on ``ex``."""
        rd = ex.row_description
        if rd is None:
            plan: ResultPlan | None = ResultPlan((), (), refusal=_NOT_DESCRIBED)
            ex.mask_plan = plan
            return plan
        snapshot = self._snapshot()
        index = ex.tag_count if ex.path == "simple" else 0
        key = (ex.text, rd, ex.result_formats, index, snapshot.version)
        plans = self._plans
        kept = plans.hit(key)
        if kept is not MISS:
            plan = cast("ResultPlan | None", kept)
        else:
            statements = None
            if ex.text is not None and self.policy.has_column_rules:
                statements = self._statements(ex.text.decode(self.codec, "replace"))
            plan = plans.resolve(
                key,
                statements,
                (rd, ex.result_formats, index, snapshot.version),
                lambda: self._build(ex, rd, index, snapshot, statements),
                self.catalog.invalidate,
            )
        ex.mask_plan = NO_MASK if plan is None else plan
        return plan

    def _build(
        self,
        ex: Execution,
        rd: bytes,
        index: int,
        snapshot: Catalog,
        statements: tuple[StatementLineage, ...] | None,
    ) -> ResultPlan | None:
        """The plan of one result; ``statements``: the lineage of ``ex``'s text (None when
        no column rule applies, which is when lineage is not needed)."""
        fields = parse_row_description(rd)
        formats = ex.result_formats
        sources = [snapshot.source(f.table_oid, f.attnum) for f in fields]
        lineage = None
        if statements is not None and index < len(statements):
            lineage = statements[index]
        text_columns = [f.type_oid in TEXT_LIKE_OIDS or f.type_oid in JSON_OIDS for f in fields]
        columns = column_masks(sources, lineage, self.policy, text_columns)
        if columns is None:
            return None
        rewriters = []
        refusal = None
        policy = self.policy
        for i, (field, column) in enumerate(zip(fields, columns, strict=True)):
            fmt = field.format
            if formats:
                fmt = formats[0] if len(formats) == 1 else formats[i] if i < len(formats) else 0
            if column.mask is not None:
                masker = pg_column_mask(field.type_oid, fmt, column.mask.style, self.codec)
                if not masker.exact and policy.on_unmaskable == "deny":
                    refusal = (
                        f'result refused by the gateway: column "{field.name}" is masked and '
                        f"its type (OID {field.type_oid}) cannot carry a masked value"
                    )
                rewriters.append((i, masker.apply))
            elif column.detectors:
                detect = detector_rewriter(
                    policy,
                    self.codec,
                    json_value=field.type_oid in JSON_OIDS,
                    jsonb_binary=field.type_oid == _JSONB and fmt == 1,
                )
                if detect.screen is None:
                    rewriters.append((i, detect.whole))
                else:  # the compiled rewriter screens values in C, calling only for some
                    rewriters.append(
                        (i, ScreenedValue(detect.whole, detect.screened, *detect.screen))
                    )
        return ResultPlan(tuple(rewriters), columns, refusal, unknown_sources=UNKNOWN in sources)

    # ----------------------------------------------------------- errors, notifications

    def scrub_error(self, mtype: int, body: bytes, ex: Execution | None) -> bytes | None:
        """An ErrorResponse / NoticeResponse with values hidden, or None if unchanged."""
        fields = parse_error_fields(body)
        policy = self.policy
        changed = False
        if policy.has_column_rules and self._reads_masked(fields, ex):
            for code in _SCRUBBED_FIELDS & fields.keys():
                if code == "D":
                    fields[code] = _DETAIL_HIDDEN
                elif code == "M":
                    sql = ex.text.decode(self.codec, "replace") if ex and ex.text else None
                    if not (fields.get("C") in NAME_ERRORS and self.is_typo(sql)):
                        fields[code] = withheld_message(fields.get("C", ""))
                else:
                    fields[code] = REDACTED
            changed = True
        for code in _SCRUBBED_FIELDS & fields.keys():
            new = self.detect(fields[code])
            if new is not None:
                fields[code] = new
                changed = True
        if not changed:
            return None
        out = b"".join(code.encode() + value.encode() + b"\x00" for code, value in fields.items())
        return build_message(mtype, out + b"\x00")

    def _reads_masked(self, fields: dict[str, str], ex: Execution | None) -> bool:
        policy = self.policy
        table = fields.get("t")
        if table is not None:
            columns = self._snapshot().columns.get((fields.get("s", ""), table), ())
            if any(policy.column_mask(fields.get("s", ""), table, c) for c in columns):
                return True
        if ex is None or ex.text is None:
            return True  # cannot tell what the statement read: assume the worst
        return self.reads_masked(ex.text.decode(self.codec, "replace"))

    def scrub_notification(self, body: bytes) -> bytes | None:
        """A NotificationResponse with its payload masked, or None if unchanged. Payloads
        have no lineage (any session can NOTIFY anything): with column rules they are
        redacted whole; with detectors only, detected values are."""
        pid = body[:4]
        channel_end = body.index(b"\x00", 4)
        channel = body[4 : channel_end + 1]
        payload = body[channel_end + 1 : -1]
        if not payload:
            return None
        if self.policy.has_column_rules:
            new = REDACTED
        else:
            found = self.detect(payload.decode(self.codec, "surrogateescape"))
            if found is None:
                return None
            new = found
        return build_message(0x41, pid + channel + new.encode(self.codec, "replace") + b"\x00")
