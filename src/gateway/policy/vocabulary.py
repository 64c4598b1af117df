"""The policy vocabulary: statement classes, built-in rules, statement kinds, function lists.

Everything a policy file may name lives here, so validation (``spec.py``), classification
(``classify.py``) and the documentation (docs/policy.md) agree on one list. Adding a class,
a kind or a built-in rule is a change to this module plus its tests and docs.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

# --------------------------------------------------------------------------- classes

# Ordered: decisions report the first offending class in this order, so the most specific
# danger is named ("file" before "read" for ``SELECT pg_read_file(...)``).
CLASS_ORDER: Final[tuple[str, ...]] = (
    "unknown",
    "file",
    "dynamic",
    "privilege",
    "admin",
    "dcl",
    "ddl",
    "export",
    "import",
    "write",
    "read",
    "session",
    "transaction",
)
CLASSES: Final[frozenset[str]] = frozenset(CLASS_ORDER)
CLASS_RANK: Final[Mapping[str, int]] = MappingProxyType({c: i for i, c in enumerate(CLASS_ORDER)})

CLASS_DESCRIPTIONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "read": "SELECT, SHOW, EXPLAIN without ANALYZE, read-only CTEs, HANDLER, FETCH",
        "write": "INSERT, UPDATE, DELETE, MERGE, REPLACE, TRUNCATE, LOCK, data-modifying CTEs",
        "ddl": "CREATE, ALTER, DROP, RENAME, COMMENT; SELECT INTO and CREATE TABLE AS",
        "dcl": "GRANT, REVOKE, CREATE/ALTER/DROP ROLE or USER, SET PASSWORD",
        "transaction": "BEGIN, COMMIT, ROLLBACK, SAVEPOINT, SET TRANSACTION (always allowed)",
        "session": "harmless SET/RESET, DISCARD, LISTEN, USE, DEALLOCATE",
        "privilege": "SET ROLE, SET SESSION AUTHORIZATION, set_config('role', ...), "
        "settings that change how the server reads SQL text",
        "export": "COPY ... TO, SELECT ... INTO OUTFILE",
        "import": "COPY ... FROM, LOAD DATA",
        "file": "server-side file and program access: pg_read_file, lo_import, COPY PROGRAM, "
        "COPY to or from a server file, LOAD_FILE, INTO OUTFILE, LOAD DATA INFILE",
        "dynamic": "DO blocks, CALL, functions that run SQL text (dblink, query_to_xml), "
        "PostgreSQL fast-path function calls",
        "admin": "ALTER SYSTEM, SET GLOBAL, VACUUM, ANALYZE, CLUSTER, REINDEX, CHECKPOINT, "
        "KILL, pg_terminate_backend, FLUSH, SHUTDOWN",
        "unknown": "anything the gateway cannot parse or classify (never included in '*')",
    }
)

# Classes that ``"*"`` in ``allow`` stands for.
STAR_CLASSES: Final[frozenset[str]] = CLASSES - {"unknown"}
# Allowed in every effective policy unless a deny rule matches: refusing COMMIT would leave
# sessions stuck inside transactions the client cannot end.
ALWAYS_ALLOWED: Final[frozenset[str]] = frozenset({"transaction"})

# --------------------------------------------------------------------------- built-in rules

BUILTIN_RULES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "drop_database": "DROP DATABASE (and DROP SCHEMA on MySQL, where it is the same)",
        "drop_schema": "DROP SCHEMA",
        "drop_table": "DROP TABLE",
        "drop_role": "DROP ROLE, DROP USER, DROP GROUP",
        "truncate": "TRUNCATE",
        "delete_without_where": "DELETE without a WHERE clause that references a column",
        "update_without_where": "UPDATE without a WHERE clause that references a column",
        "copy_to_stdout": "COPY ... TO STDOUT (bulk export to the client)",
        "copy_program": "COPY ... TO/FROM PROGRAM (runs a shell command on the server)",
        "file_access": "any statement of class file",
        "alter_system": "ALTER SYSTEM",
        "set_global": "MySQL SET GLOBAL / SET PERSIST / SET @@global.x",
        "kill": "KILL, pg_terminate_backend(), pg_cancel_backend()",
    }
)

# The classes a statement must have for each built-in rule to match it. Used to reject
# rules that can never fire in a policy that does not allow any of these classes.
BUILTIN_RULE_CLASSES: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        "drop_database": frozenset({"ddl"}),
        "drop_schema": frozenset({"ddl"}),
        "drop_table": frozenset({"ddl"}),
        "drop_role": frozenset({"dcl"}),
        "truncate": frozenset({"write"}),
        "delete_without_where": frozenset({"write"}),
        "update_without_where": frozenset({"write"}),
        "copy_to_stdout": frozenset({"export"}),
        "copy_program": frozenset({"file"}),
        "file_access": frozenset({"file"}),
        "alter_system": frozenset({"admin"}),
        "set_global": frozenset({"admin"}),
        "kill": frozenset({"admin"}),
    }
)

# --------------------------------------------------------------------------- kinds

# Classes that a function call anywhere in a statement can add (see FUNCTION_CLASSES).
FUNCTION_DERIVED: Final[frozenset[str]] = frozenset(
    {"file", "dynamic", "admin", "privilege", "session", "write"}
)
_ANY: Final[frozenset[str]] = CLASSES - {"unknown"}


def _k(*classes: str) -> frozenset[str]:
    return frozenset(classes) | FUNCTION_DERIVED


_DDL_OBJECTS: Final[tuple[str, ...]] = (
    "DATABASE",
    "SCHEMA",
    "TABLE",
    "VIEW",
    "MATERIALIZED VIEW",
    "INDEX",
    "SEQUENCE",
    "FUNCTION",
    "PROCEDURE",
    "TRIGGER",
    "TYPE",
    "DOMAIN",
    "EXTENSION",
    "FOREIGN TABLE",
    "SERVER",
    "EVENT",
    "POLICY",
    "RULE",
    "TABLESPACE",
    "LANGUAGE",
    "PUBLICATION",
    "SUBSCRIPTION",
    "OTHER",
)
# DDL object types that also need ``admin`` (they load code or touch the server's files).
ADMIN_DDL_OBJECTS: Final[frozenset[str]] = frozenset(
    {"EXTENSION", "LANGUAGE", "TABLESPACE", "SUBSCRIPTION", "SERVER"}
)
DCL_OBJECTS: Final[frozenset[str]] = frozenset({"ROLE", "USER", "GROUP"})


def _ddl_kinds() -> dict[str, frozenset[str]]:
    kinds: dict[str, frozenset[str]] = {}
    for verb in ("CREATE", "ALTER", "DROP"):
        for obj in _DDL_OBJECTS:
            base = {"ddl"}
            if obj in ADMIN_DDL_OBJECTS:
                base.add("admin")
            if verb == "CREATE" and obj in ("TABLE", "MATERIALIZED VIEW"):
                # CREATE TABLE AS / CREATE MATERIALIZED VIEW AS write rows, and the query
                # may itself be a data-modifying CTE or EXECUTE of anything.
                kinds[f"{verb} {obj}"] = _ANY
                continue
            kinds[f"{verb} {obj}"] = _k(*base)
        for obj in sorted(DCL_OBJECTS):
            kinds[f"{verb} {obj}"] = _k("dcl")
    return kinds


# Statement kinds a custom rule can name, with the classes a statement of that kind can
# have. Wrappers (PREPARE, EXECUTE, EXPLAIN ANALYZE, DECLARE CURSOR) take the kind of the
# statement they wrap; "PREPARE" and "EXECUTE" remain for bodies the gateway cannot see.
KINDS: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        "SELECT": _ANY,  # data-modifying CTEs, functions
        "SELECT INTO": _k("ddl", "write"),
        "SELECT INTO OUTFILE": _k("read", "export", "file"),
        "VALUES": _k("read"),
        "INSERT": _ANY,
        "UPDATE": _ANY,
        "DELETE": _ANY,
        "MERGE": _ANY,
        "REPLACE": _k("write"),
        "TRUNCATE": _k("write"),
        "LOCK": _k("write"),
        "UNLOCK": _k("session"),
        "REFRESH MATERIALIZED VIEW": _k("write"),
        "NOTIFY": _k("write"),
        "COPY": _ANY,
        "LOAD DATA": _k("write", "import", "file"),
        "SHOW": _k("read"),
        "SHOW GRANTS": _k("admin"),
        "EXPLAIN": _k("read"),
        "DESCRIBE": _k("read"),
        "HANDLER": _k("read"),
        "FETCH": _k("read"),
        "MOVE": _k("read"),
        "CLOSE": _k("read"),
        "HELP": _k("read"),
        "DO": _k("dynamic", "read"),
        "CALL": _k("dynamic"),
        "PREPARE": _k("dynamic"),
        "EXECUTE": _ANY,
        "DEALLOCATE": _k("session"),
        "FUNCTION CALL": frozenset({"dynamic"}),
        **_ddl_kinds(),
        "RENAME TABLE": _k("ddl"),
        "RENAME USER": _k("dcl"),
        "COMMENT": _k("ddl"),
        "SECURITY LABEL": _k("ddl"),
        "IMPORT FOREIGN SCHEMA": _k("ddl"),
        "GRANT": _k("dcl"),
        "REVOKE": _k("dcl"),
        "REASSIGN OWNED": _k("dcl"),
        "DROP OWNED": _k("dcl"),
        "ALTER DEFAULT PRIVILEGES": _k("dcl"),
        "SET PASSWORD": _k("dcl"),
        "SET DEFAULT ROLE": _k("dcl"),
        "BEGIN": frozenset({"transaction"}),
        "COMMIT": frozenset({"transaction"}),
        "ROLLBACK": frozenset({"transaction"}),
        "SAVEPOINT": frozenset({"transaction"}),
        "RELEASE SAVEPOINT": frozenset({"transaction"}),
        "ROLLBACK TO SAVEPOINT": frozenset({"transaction"}),
        "PREPARE TRANSACTION": frozenset({"transaction"}),
        "COMMIT PREPARED": frozenset({"transaction"}),
        "ROLLBACK PREPARED": frozenset({"transaction"}),
        "XA": frozenset({"transaction"}),
        "SET TRANSACTION": frozenset({"transaction", "admin"}),
        "SET CONSTRAINTS": frozenset({"transaction"}),
        "SET": _k("session", "privilege", "admin"),
        "SET ROLE": frozenset({"privilege"}),
        "SET SESSION AUTHORIZATION": frozenset({"privilege"}),
        "SET GLOBAL": _k("admin"),
        "RESET": frozenset({"session", "privilege", "admin"}),
        "DISCARD": frozenset({"session"}),
        "LISTEN": frozenset({"session"}),
        "UNLISTEN": frozenset({"session"}),
        "USE": frozenset({"session"}),
        "ALTER SYSTEM": _k("admin"),
        "VACUUM": frozenset({"admin"}),
        "ANALYZE": frozenset({"admin"}),
        "CLUSTER": frozenset({"admin"}),
        "REINDEX": frozenset({"admin"}),
        "CHECKPOINT": frozenset({"admin"}),
        "LOAD": frozenset({"admin"}),
        "KILL": frozenset({"admin"}),
        "FLUSH": frozenset({"admin"}),
        "SHUTDOWN": frozenset({"admin"}),
        "RESTART": frozenset({"admin"}),
        "ADMIN": _k("admin"),
        "UNKNOWN": frozenset({"unknown"}),
    }
)

# --------------------------------------------------------------------------- functions

# Functions recognised by name wherever they are called (compared case-insensitively,
# schema qualification ignored). Each adds classes and, for some, built-in rule hits.
_FILE_FUNCTIONS: Final = (
    # PostgreSQL: server files, large objects imported/exported from server files, adminpack
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "pg_stat_file",
    "pg_ls_logdir",
    "pg_ls_waldir",
    "pg_ls_tmpdir",
    "pg_ls_archive_statusdir",
    "pg_ls_logicalsnapdir",
    "pg_ls_logicalmapdir",
    "pg_ls_replslotdir",
    "pg_file_write",
    "pg_file_rename",
    "pg_file_unlink",
    "pg_file_sync",
    "pg_logdir_ls",
    "pg_current_logfile",
    "lo_import",
    "lo_export",
    # read the server's configuration files
    "pg_hba_file_rules",
    "pg_ident_file_mappings",
    "pg_show_all_file_settings",
    # MySQL: server file read; lib_mysqludf_sys runs shell commands
    "load_file",
    "sys_exec",
    "sys_eval",
)
_DYNAMIC_FUNCTIONS: Final = (
    # run SQL text the gateway cannot see (or reach tables named only by strings)
    # tablefunc and xml2: the query text (or table name) is a string argument
    "crosstab",
    "crosstab2",
    "crosstab3",
    "crosstab4",
    "connectby",
    "xpath_table",
    # Citus: runs command text on other nodes
    "run_command_on_shards",
    "run_command_on_placements",
    "run_command_on_all_nodes",
    "run_command_on_coordinator",
    "dblink",
    "dblink_exec",
    "dblink_open",
    "dblink_fetch",
    "dblink_send_query",
    "dblink_get_result",
    "dblink_connect",
    "dblink_connect_u",
    "query_to_xml",
    "query_to_xmlschema",
    "query_to_xml_and_xmlschema",
    "cursor_to_xml",
    "table_to_xml",
    "table_to_xmlschema",
    "table_to_xml_and_xmlschema",
    "schema_to_xml",
    "schema_to_xmlschema",
    "schema_to_xml_and_xmlschema",
    "database_to_xml",
    "database_to_xmlschema",
    "database_to_xml_and_xmlschema",
    "ts_stat",
    "ts_rewrite",  # ts_rewrite(tsquery, text) runs the text as a query
    "pg_background_launch",
    "run_command_on_workers",
)
_ADMIN_FUNCTIONS: Final = (
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_promote",
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_backup_start",
    "pg_backup_stop",
    "pg_start_backup",
    "pg_stop_backup",
    "pg_create_physical_replication_slot",
    "pg_create_logical_replication_slot",
    "pg_drop_replication_slot",
    "pg_copy_physical_replication_slot",
    "pg_copy_logical_replication_slot",
    "pg_replication_slot_advance",
    # consume the slot's changes: a later reader no longer gets them
    "pg_logical_slot_get_changes",
    "pg_logical_slot_get_binary_changes",
    "pg_wal_replay_pause",
    "pg_wal_replay_resume",
    "pg_log_backend_memory_contexts",
    "pg_stat_reset",
    "pg_stat_reset_shared",
    "pg_stat_reset_single_table_counters",
    "pg_stat_reset_single_function_counters",
    "pg_stat_reset_slru",
    "pg_stat_reset_replication_slot",
    "pg_stat_statements_reset",
    "pg_stat_reset_subscription_stats",
    "pg_import_system_collations",
    # replication origins (the pg_replication_origin_ prefix: FUNCTION_PREFIX_CLASSES)
    "pg_replication_origin_create",
    "pg_replication_origin_drop",
    "pg_replication_origin_session_setup",
    "pg_replication_origin_session_reset",
    "pg_replication_origin_xact_setup",
    "pg_replication_origin_xact_reset",
    "pg_replication_origin_advance",
)
_WRITE_FUNCTIONS: Final = (
    # sequences (PostgreSQL, MariaDB): nextval advances one for good, even in a rollback
    "setval",
    "nextval",
    "lo_create",
    "lo_creat",
    "lo_unlink",
    "lo_put",
    "lo_from_bytea",
    "lowrite",
    "lo_truncate",
    "lo_truncate64",
    "pg_notify",
    # writes a message into the WAL for logical decoding consumers (like pg_notify)
    "pg_logical_emit_message",
    # change an index's contents
    "brin_summarize_new_values",
    "brin_summarize_range",
    "brin_desummarize_range",
    "gin_clean_pending_list",
)

FUNCTION_CLASSES: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        **{f: frozenset({"file"}) for f in _FILE_FUNCTIONS},
        **{f: frozenset({"dynamic"}) for f in _DYNAMIC_FUNCTIONS},
        **{f: frozenset({"admin"}) for f in _ADMIN_FUNCTIONS},
        **{f: frozenset({"write"}) for f in _WRITE_FUNCTIONS},
    }
)
# Name prefixes that classify every function they start, listed or not.
FUNCTION_PREFIX_CLASSES: Final[tuple[tuple[str, frozenset[str]], ...]] = (
    ("pg_replication_origin_", frozenset({"admin"})),
    ("pg_stat_reset", frozenset({"admin"})),
)
FUNCTION_BUILTINS: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        "pg_terminate_backend": frozenset({"kill"}),
        "pg_cancel_backend": frozenset({"kill"}),
    }
)

# --------------------------------------------------------------------------- settings

# PostgreSQL settings whose change alters who the session is.
PG_PRIVILEGE_SETTINGS: Final[frozenset[str]] = frozenset(
    {"role", "session_authorization", "session_replication_role"}
)
# MySQL client character sets in which a multibyte character can end in 0x5c (backslash),
# so the server and the gateway would disagree on where a string literal ends.
MYSQL_UNSAFE_CHARSETS: Final[frozenset[str]] = frozenset(
    {"big5", "cp932", "gbk", "gb18030", "sjis", "gb2312", "eucjpms", "ujis"}
)
# Words in a MySQL sql_mode value that change how the server tokenizes ("..." becomes an
# identifier, backslash stops escaping); the older combination modes include ANSI_QUOTES.
MYSQL_LEXER_MODES: Final[tuple[str, ...]] = (
    "ANSI",
    "NO_BACKSLASH_ESCAPES",
    "DB2",
    "MAXDB",
    "MSSQL",
    "ORACLE",
    "POSTGRESQL",
)
