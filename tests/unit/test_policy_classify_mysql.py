"""Table-driven classification of MySQL / MariaDB statements (same row format as the
PostgreSQL table: kind, classes, built-in rules; " | " between statements)."""

# ruff: noqa: E501  (one table row per line reads better than the formatter's layout)
from __future__ import annotations

import pytest

from gateway.policy.classify import classify_text
from tests.unit.test_policy_classify_pg import Row, expected

# fmt: off
BENIGN: list[Row] = [
    ('SELECT 1', 'SELECT', 'read', ''),
    ("SELECT * FROM t WHERE id = 5 AND name = 'x'", 'SELECT', 'read', ''),
    ("SELECT 'DROP DATABASE prod'", 'SELECT', 'read', ''),
    ('SELECT "DROP TABLE t; DELETE FROM u"', 'SELECT', 'read', ''),
    ('SELECT `drop`, `delete` FROM `truncate`', 'SELECT', 'read', ''),
    ('SELECT * FROM `pay``roll`', 'SELECT', 'read', ''),
    ('SELECT drop_count FROM load_file_stats', 'SELECT', 'read', ''),
    ("SELECT 'it\\'s; DROP TABLE t'", 'SELECT', 'read', ''),
    ("SELECT 'a''b; DROP TABLE t'", 'SELECT', 'read', ''),
    ('SELECT "a\\"b; DROP TABLE t"', 'SELECT', 'read', ''),
    ('SELECT 1 -- DROP TABLE t', 'SELECT', 'read', ''),
    ('SELECT 1 # DROP TABLE t', 'SELECT', 'read', ''),
    ('SELECT 1 /* DROP TABLE t */', 'SELECT', 'read', ''),
    ('SELECT /*+ MAX_EXECUTION_TIME(1000) */ * FROM t', 'SELECT', 'read', ''),
    ('SELECT /*+ BKA(t) */ a FROM t WHERE b = 1', 'SELECT', 'read', ''),
    ("SELECT JSON_EXTRACT(doc, '$.a'), doc->'$.b', doc->>'$.c' FROM t", 'SELECT', 'read', ''),
    ('SELECT ROW_NUMBER() OVER (PARTITION BY a ORDER BY b) FROM t', 'SELECT', 'read', ''),
    ('WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r', 'SELECT', 'read', ''),
    ('SELECT a INTO @v FROM t LIMIT 1', 'SELECT', 'read', ''),
    ('SELECT * FROM t LIMIT 10, 20', 'SELECT', 'read', ''),
    ('SELECT * FROM t FOR UPDATE', 'SELECT', 'read', ''),
    ('SELECT * FROM t LOCK IN SHARE MODE', 'SELECT', 'read', ''),
    ("SELECT x'4142', b'01', 0x41, _utf8mb4'abc', N'abc'", 'SELECT', 'read', ''),
    ('SELECT @a, @@session.sql_mode, @@version', 'SELECT', 'read', ''),
    ('SELECT * FROM db1.t1 JOIN db2.t2 USING (id)', 'SELECT', 'read', ''),
    ('SELECT ? FROM t WHERE id = ?', 'SELECT', 'read', ''),
    ('TABLE t', 'SELECT', 'read', ''),
    ('VALUES ROW(1, 2), ROW(3, 4)', 'VALUES', 'read', ''),
    ('SHOW TABLES', 'SHOW', 'read', ''),
    ('SHOW DATABASES', 'SHOW', 'read', ''),
    ('SHOW CREATE TABLE t', 'SHOW', 'read', ''),
    ("SHOW VARIABLES LIKE 'max%'", 'SHOW', 'read', ''),
    ('SHOW FULL PROCESSLIST', 'SHOW', 'read', ''),
    ('DESCRIBE t', 'DESCRIBE', 'read', ''),
    ('DESC t', 'DESCRIBE', 'read', ''),
    ('EXPLAIN t', 'DESCRIBE', 'read', ''),
    ("HELP 'SELECT'", 'HELP', 'read', ''),
    ('DO SLEEP(0)', 'DO', 'read', ''),
    ("DO RELEASE_LOCK('x'), (SELECT 1)", 'DO', 'read', ''),
    ('SeLeCt 1', 'SELECT', 'read', ''),
    # neighbours of the executable-comment, "--" and EXPLAIN fixes that must still pass
    ('SELECT 1 /*!50000 STRAIGHT_JOIN */', 'SELECT', 'read', ''),
    ('SELECT /*!50000 STRAIGHT_JOIN */ a FROM t', 'SELECT', 'read', ''),
    ('/*!40101 SET NAMES utf8 */', 'SET', 'session', ''),
    ("/*!40101 SET @x = 'a;b' */", 'SET', 'session', ''),
    ('/*!500000 SELECT 1 */', 'SELECT', 'read', ''),
    ('SELECT 1 -- comment', 'SELECT', 'read', ''),
    ('SELECT 1 --\x7f; DROP TABLE t', 'SELECT', 'read', ''),
    ("SELECT 'a' 'b'", 'SELECT', 'read', ''),
    ("SELECT '--\u00e9'", 'SELECT', 'read', ''),
    ('EXPLAIN FOR SCHEMA db SELECT * FROM t', 'EXPLAIN', 'read', ''),
    ('EXPLAIN FORMAT=JSON FOR CONNECTION 5', 'EXPLAIN', 'read', ''),
    ('EXPLAIN extended t', 'DESCRIBE', 'read', ''),
    # MariaDB runs derived tables and constant subqueries while it plans
    ("EXPLAIN SELECT * FROM (SELECT LOAD_FILE('/etc/hostname')) x", 'EXPLAIN', 'read,file', 'file_access'),
    ('EXPLAIN SELECT * FROM (SELECT SETVAL(s, 1000)) x', 'EXPLAIN', 'read,write', ''),
    ('EXPLAIN UPDATE one SET v = 1 WHERE pk = (SELECT SETVAL(s, 7000))', 'EXPLAIN', 'read,write', ''),
    ('DESCRIBE SELECT * FROM (SELECT SETVAL(s, 1)) x', 'EXPLAIN', 'read,write', ''),
    ('SELECT LASTVAL(s)', 'SELECT', 'read', ''),
]

EVASIONS: list[Row] = [
    ('/*!50000 DROP TABLE t */', 'DROP TABLE', 'ddl', 'drop_table'),
    ('/*! DROP TABLE t */', 'DROP TABLE', 'ddl', 'drop_table'),
    ('/*!99999 DROP TABLE t */', 'DROP TABLE', 'ddl', 'drop_table'),
    ('/*M!100100 DROP TABLE t */', 'DROP TABLE', 'ddl', 'drop_table'),
    ('SELECT 1 /*!50000 ; DROP TABLE t */', 'SELECT | DROP TABLE', 'read | ddl', ' | drop_table'),
    ("SELECT 1 /*!, LOAD_FILE('/etc/passwd') */", 'SELECT', 'read,file', 'file_access'),
    ('/*!40101 SET NAMES utf8mb4 */', 'SET', 'session', ''),
    ('/**/DROP/**/TABLE t', 'DROP TABLE', 'ddl', 'drop_table'),
    ('DrOp TaBlE t', 'DROP TABLE', 'ddl', 'drop_table'),
    ('# comment\nDROP TABLE t', 'DROP TABLE', 'ddl', 'drop_table'),
    # "--" is a comment only when followed by a space: here it is two minus signs
    ('SELECT 1--1; DROP TABLE t', 'SELECT | DROP TABLE', 'read | ddl', ' | drop_table'),
    ('SELECT 1 -- x; DROP TABLE t', 'SELECT', 'read', ''),
    ('SELECT 1 --\tx; DROP TABLE t', 'SELECT', 'read', ''),
    # MySQL block comments do not nest: the DROP is code
    ('SELECT /* a /* b */ 1; DROP TABLE t; /* c */', 'SELECT | DROP TABLE', 'read | ddl', ' | drop_table'),
    ("SELECT 'a\\'; DROP TABLE t; -- '", 'SELECT', 'read', ''),
    ('SELECT 1; DROP DATABASE prod', 'SELECT | DROP DATABASE', 'read | ddl', ' | drop_database,drop_schema'),
    ("SELECT LOAD_FILE('/etc/passwd')", 'SELECT', 'read,file', 'file_access'),
    ("SELECT load_file ('/etc/passwd')", 'SELECT', 'read,file', 'file_access'),
    ("SELECT sys_exec('id')", 'SELECT', 'read,file', 'file_access'),
    ("SELECT * FROM t INTO OUTFILE '/tmp/x'", 'SELECT INTO OUTFILE', 'read,export,file', 'file_access'),
    ("SELECT * INTO OUTFILE '/tmp/x' FIELDS TERMINATED BY ',' FROM t", 'SELECT INTO OUTFILE', 'read,export,file', 'file_access'),
    ("SELECT a INTO DUMPFILE '/tmp/x' FROM t", 'SELECT INTO OUTFILE', 'read,export,file', 'file_access'),
    ("SELECT 1 /*!INTO OUTFILE '/tmp/x' */", 'SELECT INTO OUTFILE', 'read,export,file', 'file_access'),
    ("TABLE t INTO OUTFILE '/tmp/x'", 'SELECT INTO OUTFILE', 'read,export,file', 'file_access'),
    # "--" + DEL is a comment to the server, like "--" + any other control character
    ("SHOW TABLES --\x7f '\n; DELETE FROM t; -- '", 'SHOW | DELETE', 'read | write', ' | delete_without_where'),
    ("DO 1 --\x7f '\n; UPDATE t SET a = 1; -- '", 'DO | UPDATE', 'read | write', ' | update_without_where'),
    # EXPLAIN ANALYZE ... FOR SCHEMA db <statement> runs the statement
    ('EXPLAIN ANALYZE FOR SCHEMA db DELETE t FROM t JOIN u ON t.id = u.id', 'DELETE', 'write', 'delete_without_where'),
    ('EXPLAIN ANALYZE FOR DATABASE `db` UPDATE t SET a = 1', 'UPDATE', 'write', 'update_without_where'),
    ('EXPLAIN ANALYZE FORMAT=TREE FOR SCHEMA db DELETE FROM t WHERE id = 1', 'DELETE', 'write', ''),
    ('EXPLAIN FOR SCHEMA db DELETE FROM t', 'EXPLAIN', 'read', ''),
    # sequences (MariaDB): reading the next value advances the sequence for good
    ('SELECT NEXTVAL(s)', 'SELECT', 'read,write', ''),
    ('SELECT nextval(db.s)', 'SELECT', 'read,write', ''),
    ('SELECT SETVAL(s, 10)', 'SELECT', 'read,write', ''),
    ('DO NEXT VALUE FOR s', 'DO', 'read,write', ''),
    ('SET @v = NEXT VALUE FOR s', 'SET', 'session,write', ''),
    ('SET @v = NEXTVAL(s)', 'SET', 'session,write', ''),
]

LOOK_INSIDE: list[Row] = [
    ('EXPLAIN SELECT * FROM t', 'EXPLAIN', 'read', ''),
    ('EXPLAIN DELETE FROM t', 'EXPLAIN', 'read', ''),
    ('EXPLAIN FORMAT=JSON DELETE FROM t', 'EXPLAIN', 'read', ''),
    ('EXPLAIN ANALYZE SELECT * FROM t', 'SELECT', 'read', ''),
    ('EXPLAIN ANALYZE DELETE FROM t', 'DELETE', 'write', 'delete_without_where'),
    ('EXPLAIN ANALYZE FORMAT=TREE SELECT 1', 'SELECT', 'read', ''),
    ('EXPLAIN FOR CONNECTION 5', 'EXPLAIN', 'read', ''),
    ('DESCRIBE SELECT * FROM t', 'EXPLAIN', 'read', ''),
    ('ANALYZE SELECT * FROM t', 'SELECT', 'read', ''),
    ('ANALYZE FORMAT=JSON DELETE FROM t WHERE id = 1', 'DELETE', 'write', ''),
    ('ANALYZE TABLE t', 'ANALYZE', 'admin', ''),
    ('ANALYZE NO_WRITE_TO_BINLOG TABLE t', 'ANALYZE', 'admin', ''),
    ('HANDLER t OPEN', 'HANDLER', 'read', ''),
    ('HANDLER t OPEN AS h', 'HANDLER', 'read', ''),
    ('HANDLER h READ FIRST', 'HANDLER', 'read', ''),
    ('HANDLER h READ idx NEXT WHERE a > 1 LIMIT 5', 'HANDLER', 'read', ''),
    ('HANDLER h CLOSE', 'HANDLER', 'read', ''),
    ('CREATE TABLE t2 AS SELECT * FROM t', 'CREATE TABLE', 'ddl,read,write', ''),
    ('CREATE TABLE t2 SELECT * FROM t', 'CREATE TABLE', 'ddl,read,write', ''),
    ('CREATE TABLE t2 (a int) SELECT a FROM t', 'CREATE TABLE', 'ddl,read,write', ''),
    ('CREATE TABLE t2 (a int PRIMARY KEY) ENGINE=InnoDB', 'CREATE TABLE', 'ddl', ''),
    ('CALL p(1)', 'CALL', 'dynamic', ''),
    ("PREPARE s FROM 'DELETE FROM t'", 'DELETE', 'write', 'delete_without_where'),
    ("PREPARE s FROM 'SELECT * FROM t WHERE id = ?'", 'SELECT', 'read', ''),
    ('PREPARE s FROM "DROP TABLE t"', 'DROP TABLE', 'ddl', 'drop_table'),
    ("PREPARE s FROM 'SELECT 1; DROP TABLE t'", 'UNKNOWN', 'unknown', ''),
    ('PREPARE s FROM @sql', 'PREPARE', 'dynamic', ''),
    ('EXECUTE s', 'EXECUTE', '', ''),
    ('EXECUTE s USING @a, @b', 'EXECUTE', '', ''),
    ('EXECUTE p USING @a', 'EXECUTE', '', ''),
    ('EXECUTE `immediate`', 'EXECUTE', '', ''),
    # C: MariaDB EXECUTE IMMEDIATE <expr> runs the text the expression evaluates to
    ("EXECUTE IMMEDIATE 'DELETE FROM t'", 'EXECUTE', 'dynamic', ''),
    ("EXECUTE immediate 'SELECT 1'", 'EXECUTE', 'dynamic', ''),
    ('EXECUTE IMMEDIATE @sql USING @a, 1', 'EXECUTE', 'dynamic', ''),
    ("PREPARE immediate FROM 'SELECT 1'; EXECUTE IMMEDIATE CONCAT('DROP ', 'TABLE t')", 'SELECT | EXECUTE', 'read | dynamic', ' | '),
    ("EXECUTE IMMEDIATE CONCAT('SELECT ', LOAD_FILE('/etc/passwd'))", 'EXECUTE', 'dynamic,file', 'file_access'),
    ('SELECT 1 /*!50000 STRAIGHT_JOIN */', 'SELECT', 'read', ''),
    ('DEALLOCATE PREPARE s', 'DEALLOCATE', 'session', ''),
    ('DROP PREPARE s', 'DEALLOCATE', 'session', ''),
]

DML_DDL: list[Row] = [
    ('INSERT INTO t VALUES (1)', 'INSERT', 'write', ''),
    ('INSERT INTO t (a) VALUES (1) ON DUPLICATE KEY UPDATE a = 2', 'INSERT', 'write', ''),
    ('INSERT IGNORE INTO t SELECT * FROM u', 'INSERT', 'write', ''),
    ('REPLACE INTO t VALUES (1)', 'REPLACE', 'write', ''),
    ('REPLACE t SET a = 1', 'REPLACE', 'write', ''),
    ('UPDATE t SET a = 1', 'UPDATE', 'write', 'update_without_where'),
    ('UPDATE t SET a = 1 LIMIT 1', 'UPDATE', 'write', 'update_without_where'),
    ('UPDATE t SET a = 1 WHERE id = 2', 'UPDATE', 'write', ''),
    ('UPDATE t JOIN u ON t.id = u.id SET t.a = u.a WHERE u.b = 1', 'UPDATE', 'write', ''),
    ('DELETE FROM t', 'DELETE', 'write', 'delete_without_where'),
    ('DELETE FROM t WHERE id = 1', 'DELETE', 'write', ''),
    ('DELETE FROM t WHERE 1', 'DELETE', 'write', 'delete_without_where'),
    ('DELETE t FROM t JOIN u ON t.a = u.a', 'DELETE', 'write', 'delete_without_where'),
    ('TRUNCATE TABLE t', 'TRUNCATE', 'write', 'truncate'),
    ('TRUNCATE t', 'TRUNCATE', 'write', 'truncate'),
    ("LOAD DATA INFILE '/tmp/x' INTO TABLE t", 'LOAD DATA', 'write,import,file', 'file_access'),
    ("LOAD DATA LOCAL INFILE '/tmp/x' INTO TABLE t FIELDS TERMINATED BY ','", 'LOAD DATA', 'write,import,file', 'file_access'),
    ("LOAD DATA LOW_PRIORITY INFILE 'x' REPLACE INTO TABLE t", 'LOAD DATA', 'write,import,file', 'file_access'),
    ("LOAD XML LOCAL INFILE 'x' INTO TABLE t", 'LOAD DATA', 'write,import,file', 'file_access'),
    ('LOAD INDEX INTO CACHE t', 'LOAD', 'admin', ''),
    ('LOCK TABLES t READ', 'LOCK', 'write', ''),
    ('UNLOCK TABLES', 'UNLOCK', 'session', ''),
    ('CREATE TABLE t (a int)', 'CREATE TABLE', 'ddl', ''),
    ('CREATE TEMPORARY TABLE t (a int)', 'CREATE TABLE', 'ddl', ''),
    ('CREATE DATABASE d', 'CREATE DATABASE', 'ddl', ''),
    ('CREATE SCHEMA d', 'CREATE DATABASE', 'ddl', ''),
    ('CREATE INDEX i ON t (a)', 'CREATE INDEX', 'ddl', ''),
    ('CREATE FULLTEXT INDEX i ON t (a)', 'CREATE INDEX', 'ddl', ''),
    ('CREATE OR REPLACE ALGORITHM=MERGE DEFINER=`root`@`localhost` SQL SECURITY DEFINER VIEW v AS SELECT 1', 'CREATE VIEW', 'ddl', ''),
    ('CREATE DEFINER=CURRENT_USER VIEW v AS SELECT a FROM t', 'CREATE VIEW', 'ddl', ''),
    ('ALTER TABLE t ADD COLUMN b int', 'ALTER TABLE', 'ddl', ''),
    ('ALTER DATABASE d CHARACTER SET utf8mb4', 'ALTER DATABASE', 'ddl', ''),
    ('ALTER INSTANCE ROTATE INNODB MASTER KEY', 'ADMIN', 'admin', ''),
    ('RENAME TABLE a TO b', 'RENAME TABLE', 'ddl', ''),
    ('DROP TABLE t', 'DROP TABLE', 'ddl', 'drop_table'),
    ('DROP TEMPORARY TABLE IF EXISTS t', 'DROP TABLE', 'ddl', 'drop_table'),
    ('DROP DATABASE d', 'DROP DATABASE', 'ddl', 'drop_database,drop_schema'),
    ('DROP SCHEMA d', 'DROP DATABASE', 'ddl', 'drop_database,drop_schema'),
    ('DROP DATABASE IF EXISTS `d`', 'DROP DATABASE', 'ddl', 'drop_database,drop_schema'),
    ('DROP VIEW v', 'DROP VIEW', 'ddl', ''),
    ('DROP INDEX i ON t', 'DROP INDEX', 'ddl', ''),
]

DCL_ADMIN_SESSION: list[Row] = [
    ("GRANT ALL ON *.* TO 'u'@'%'", 'GRANT', 'dcl', ''),
    ('GRANT SELECT ON db.* TO u', 'GRANT', 'dcl', ''),
    ('REVOKE ALL PRIVILEGES ON *.* FROM u', 'REVOKE', 'dcl', ''),
    ("CREATE USER 'u'@'%' IDENTIFIED BY 'secret'", 'CREATE USER', 'dcl', ''),
    ("ALTER USER u IDENTIFIED BY 'x'", 'ALTER USER', 'dcl', ''),
    ('DROP USER u', 'DROP USER', 'dcl', 'drop_role'),
    ('CREATE ROLE r', 'CREATE ROLE', 'dcl', ''),
    ('DROP ROLE r', 'DROP ROLE', 'dcl', 'drop_role'),
    ('RENAME USER a TO b', 'RENAME USER', 'dcl', ''),
    ("SET PASSWORD = 'x'", 'SET PASSWORD', 'dcl', ''),
    ("SET PASSWORD FOR u = 'x'", 'SET PASSWORD', 'dcl', ''),
    ('SET DEFAULT ROLE r TO u', 'SET DEFAULT ROLE', 'dcl', ''),
    ('SET ROLE r', 'SET ROLE', 'privilege', ''),
    ('SET ROLE ALL', 'SET ROLE', 'privilege', ''),
    ('SET GLOBAL max_connections = 10', 'SET GLOBAL', 'admin', 'set_global'),
    ('SET PERSIST max_connections = 10', 'SET GLOBAL', 'admin', 'set_global'),
    ('SET PERSIST_ONLY max_connections = 10', 'SET GLOBAL', 'admin', 'set_global'),
    ('SET @@global.max_connections = 10', 'SET GLOBAL', 'admin', 'set_global'),
    ('SET @@GLOBAL.max_connections = 10', 'SET GLOBAL', 'admin', 'set_global'),
    ('SET @@persist.max_connections = 10', 'SET GLOBAL', 'admin', 'set_global'),
    # the gateway's shared account, password hash included
    ('SHOW GRANTS', 'SHOW GRANTS', 'admin', ''),
    ('SHOW GRANTS FOR CURRENT_USER', 'SHOW GRANTS', 'admin', ''),
    ("SHOW CREATE USER 'gateway'", 'SHOW GRANTS', 'admin', ''),
    # structured variables (key caches) are global whatever the name says
    ('SET @@global.hot_cache.key_buffer_size = 1048576', 'UNKNOWN', 'unknown', ''),
    ('SET @@hot_cache.key_buffer_size = 1048576', 'UNKNOWN', 'unknown', ''),
    ('SET @@default.key_buffer_size = 16777216', 'UNKNOWN', 'unknown', ''),
    ('SET SESSION x = 1, GLOBAL y = 2', 'SET GLOBAL', 'admin,session', 'set_global'),
    ('SET GLOBAL TRANSACTION ISOLATION LEVEL SERIALIZABLE', 'SET GLOBAL', 'admin', 'set_global'),
    ('SET sql_log_bin = 0', 'SET', 'admin', ''),
    ('SET autocommit = 0', 'SET', 'session', ''),
    ('SET @a = 1', 'SET', 'session', ''),
    ("SET @a := 1, @b = 'x'", 'SET', 'session', ''),
    ("SET @a = (SELECT LOAD_FILE('/etc/passwd'))", 'SET', 'session,file', 'file_access'),
    ('SET SESSION wait_timeout = 60', 'SET', 'session', ''),
    ('SET @@session.wait_timeout = 60', 'SET', 'session', ''),
    ("SET sql_mode = 'STRICT_TRANS_TABLES,NO_ZERO_DATE'", 'SET', 'session', ''),
    ("SET SESSION sql_mode = ''", 'SET', 'session', ''),
    ("SET sql_mode = 'NO_BACKSLASH_ESCAPES'", 'SET', 'privilege', ''),
    ("SET @@session.sql_mode = 'ANSI'", 'SET', 'privilege', ''),
    ("SET sql_mode = 'ansi_quotes'", 'SET', 'privilege', ''),
    ("SET sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES')", 'SET', 'privilege', ''),
    ('SET sql_mode = TRADITIONAL', 'SET', 'session', ''),
    ('SET NAMES utf8mb4', 'SET', 'session', ''),
    ("SET NAMES 'utf8mb4' COLLATE 'utf8mb4_unicode_ci'", 'SET', 'session', ''),
    ('SET NAMES gbk', 'SET', 'privilege', ''),
    ('SET CHARACTER SET sjis', 'SET', 'privilege', ''),
    ('SET character_set_client = big5', 'SET', 'privilege', ''),
    ('SET TRANSACTION ISOLATION LEVEL READ COMMITTED', 'SET TRANSACTION', 'transaction', ''),
    ('SET SESSION TRANSACTION READ ONLY', 'SET TRANSACTION', 'transaction', ''),
    ('SET RESOURCE GROUP rg', 'SET', 'admin', ''),
    ('KILL 5', 'KILL', 'admin', 'kill'),
    ('KILL QUERY 5', 'KILL', 'admin', 'kill'),
    ('KILL CONNECTION 5', 'KILL', 'admin', 'kill'),
    ('FLUSH PRIVILEGES', 'FLUSH', 'admin', ''),
    ('FLUSH TABLES WITH READ LOCK', 'FLUSH', 'admin', ''),
    ('SHUTDOWN', 'SHUTDOWN', 'admin', ''),
    ('RESTART', 'RESTART', 'admin', ''),
    ('RESET MASTER', 'RESET', 'admin', ''),
    ("PURGE BINARY LOGS TO 'mysql-bin.010'", 'ADMIN', 'admin', ''),
    ("CHANGE REPLICATION SOURCE TO SOURCE_HOST = 'x'", 'ADMIN', 'admin', ''),
    ('START REPLICA', 'ADMIN', 'admin', ''),
    ('STOP SLAVE', 'ADMIN', 'admin', ''),
    ("INSTALL PLUGIN p SONAME 'p.so'", 'ADMIN', 'admin', ''),
    ("UNINSTALL COMPONENT 'file://c'", 'ADMIN', 'admin', ''),
    ('OPTIMIZE TABLE t', 'ADMIN', 'admin', ''),
    ('REPAIR TABLE t', 'ADMIN', 'admin', ''),
    ('CHECK TABLE t', 'ADMIN', 'admin', ''),
    ('CHECKSUM TABLE t', 'ADMIN', 'admin', ''),
    ("BINLOG 'base64'", 'ADMIN', 'admin', ''),
    ('USE db', 'USE', 'session', ''),
    ('USE `my db`', 'USE', 'session', ''),
    ('START TRANSACTION', 'BEGIN', 'transaction', ''),
    ('START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY', 'BEGIN', 'transaction', ''),
    ('BEGIN', 'BEGIN', 'transaction', ''),
    ('BEGIN WORK', 'BEGIN', 'transaction', ''),
    ('COMMIT', 'COMMIT', 'transaction', ''),
    ('COMMIT AND NO CHAIN', 'COMMIT', 'transaction', ''),
    ('ROLLBACK', 'ROLLBACK', 'transaction', ''),
    ('ROLLBACK WORK TO SAVEPOINT s', 'ROLLBACK TO SAVEPOINT', 'transaction', ''),
    ('SAVEPOINT s', 'SAVEPOINT', 'transaction', ''),
    ('RELEASE SAVEPOINT s', 'RELEASE SAVEPOINT', 'transaction', ''),
    ("XA START 'x'", 'XA', 'transaction', ''),
    ("XA COMMIT 'x'", 'XA', 'transaction', ''),
    ('ROLLBACK WORK AND NO CHAIN NO RELEASE', 'ROLLBACK', 'transaction', ''),
    # A MariaDB compound statement runs what it holds: not a transaction statement.
    ('BEGIN NOT ATOMIC DELETE FROM t', 'UNKNOWN', 'unknown', ''),
    ('BEGIN NOT ATOMIC SELECT 1', 'UNKNOWN', 'unknown', ''),
    ('BEGIN DELETE FROM t', 'UNKNOWN', 'unknown', ''),
    ('SAVEPOINT s DELETE', 'UNKNOWN', 'unknown', ''),
    ('ROLLBACK TO SAVEPOINT s x', 'UNKNOWN', 'unknown', ''),
]

UNKNOWN: list[Row] = [
    ('', '', '', ''),
    ('garbage', 'UNKNOWN', 'unknown', ''),
    ("SELECT 'unterminated", 'UNKNOWN', 'unknown', ''),
    ('SELECT `unterminated', 'UNKNOWN', 'unknown', ''),
    ('/*!50000 DROP TABLE t', 'UNKNOWN', 'unknown', ''),
    ('/*!50000 DROP /* x */ TABLE t */', 'UNKNOWN', 'unknown', ''),
    ('DELIMITER //', 'UNKNOWN', 'unknown', ''),
    ('COPY t TO STDOUT', 'UNKNOWN', 'unknown', ''),
    ('VACUUM', 'UNKNOWN', 'unknown', ''),
    ('MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE', 'UNKNOWN', 'unknown', ''),
    ('HANDLER', 'UNKNOWN', 'unknown', ''),
    ('USE', 'UNKNOWN', 'unknown', ''),
    ("PREPARE s FROM CONCAT('DROP ', 'TABLE t')", 'UNKNOWN', 'unknown', ''),
    ('LOAD', 'UNKNOWN', 'unknown', ''),
    # executable comments read differently by a server that skips them (F1)
    ("SELECT 1 /*!999999 '*/; DELETE FROM t; SELECT 1 /*'*/", 'UNKNOWN', 'unknown', ''),
    ("SELECT 1 /*M! '*/; DROP TABLE t; SELECT 1 /*'*/", 'UNKNOWN', 'unknown', ''),
    ("SHOW TABLES /*!999999 '*/; GRANT ALL ON *.* TO app; SHOW TABLES /*'*/", 'UNKNOWN', 'unknown', ''),
    ('SELECT 1 /*!50000 "*/; DROP TABLE t; " */', 'UNKNOWN', 'unknown', ''),
    ('SELECT 1 /*!50000 # */; DROP TABLE t\n*/', 'UNKNOWN', 'unknown', ''),
    # version digits the servers read differently (F4)
    ('SET sql_mode = /*!500000x414E53495F51554F544553*/', 'UNKNOWN', 'unknown', ''),
    ('/*!5000 DROP TABLE t */', 'UNKNOWN', 'unknown', ''),
    ('/*!1234567 SELECT 1 */', 'UNKNOWN', 'unknown', ''),
    # "--" + a non-ASCII character: a comment or not depending on the charset (F2)
    ("SHOW TABLES --\x80 '\n; DELETE FROM t; -- '", 'UNKNOWN', 'unknown', ''),
    ('SELECT 1 --\u00e9 x', 'UNKNOWN', 'unknown', ''),
    # EXPLAIN options are followed by a statement, never a table (F5)
    ('EXPLAIN ANALYZE FOR SCHEMA db', 'UNKNOWN', 'unknown', ''),
    ('EXPLAIN ANALYZE t', 'UNKNOWN', 'unknown', ''),
    ('EXPLAIN FOR SCHEMA db t', 'UNKNOWN', 'unknown', ''),
    # B: a skipped executable comment allows one nested /* */, even inside a quote
    ("SELECT 1 /*!99999 '/*' */ , ' */ ; DELETE FROM t; -- '", 'UNKNOWN', 'unknown', ''),
    ("SELECT 1 /*M!999999 '/*' */ , ' */ ; DELETE FROM t; -- '", 'UNKNOWN', 'unknown', ''),
    ("SELECT 1 /*!50700 `/*` */ , ' */ ; GRANT ALL ON *.* TO x@'%'; -- '", 'UNKNOWN', 'unknown', ''),
    ('SELECT 1 /*!/*/ 2 */', 'UNKNOWN', 'unknown', ''),
    # C: EXECUTE IMMEDIATE without an expression; EXECUTE name followed by anything but USING
    ('EXECUTE IMMEDIATE', 'UNKNOWN', 'unknown', ''),
    ('EXECUTE IMMEDIATE USING @a', 'UNKNOWN', 'unknown', ''),
    ("EXECUTE IMMEDIATE 'SELECT 1' USING", 'UNKNOWN', 'unknown', ''),
    ('EXECUTE s USING', 'UNKNOWN', 'unknown', ''),
    ('EXECUTE s @a', 'UNKNOWN', 'unknown', ''),
    ("EXECUTE s 'DELETE FROM t'", 'UNKNOWN', 'unknown', ''),
    ('EXECUTE s(1)', 'UNKNOWN', 'unknown', ''),
]

ALL_ROWS = BENIGN + EVASIONS + LOOK_INSIDE + DML_DDL + DCL_ADMIN_SESSION + UNKNOWN
# fmt: on


@pytest.mark.parametrize(("sql", "kind", "classes", "builtins"), ALL_ROWS, ids=repr)
def test_classify_mysql(sql: str, kind: str, classes: str, builtins: str) -> None:
    facts = classify_text(sql, "mysql")
    got = [(f.kind, set(f.classes), set(f.builtins)) for f in facts]
    assert got == expected(kind, classes, builtins)


def test_there_are_hundreds_of_rows() -> None:
    assert len(ALL_ROWS) >= 200


@pytest.mark.parametrize(
    "sql",
    [
        "SET sql_mode = 'STRICT_TRANS_TABLES'",
        "SET NAMES 'utf8mb4'",
        "PREPARE s FROM 'SELECT 1'",
    ],
)
def test_literal_dependent_statements(sql: str) -> None:
    (facts,) = classify_text(sql, "mysql")
    assert facts.literal_dependent


def test_prepared_names_fold_case() -> None:
    (prepare,) = classify_text("PREPARE MyStmt FROM 'SELECT 1'", "mysql")
    assert prepare.prepare == "mystmt"
    (execute,) = classify_text("EXECUTE MYSTMT", "mysql")
    assert execute.execute == "mystmt"
    (dealloc,) = classify_text("DEALLOCATE PREPARE mystmt", "mysql")
    assert dealloc.deallocate == "mystmt"


def test_use_names_its_schema() -> None:
    (facts,) = classify_text("USE hr", "mysql")
    assert facts.schemas == {("hr", False)}
    (drop,) = classify_text("DROP DATABASE `Hr`", "mysql")
    assert drop.schemas == {("Hr", True)}
