"""The demo schema with fake PII, for PostgreSQL and MariaDB, identical data in both.

customers (1,000 rows) carry names, emails, SSNs, Luhn-valid card numbers and phones: the
columns that masking rules and content detectors are about. orders (20,000) and events
(200,000) are generated inside the database (generate_series / the Sequence engine's
seq_1_to_N tables) from integer arithmetic, so seeding takes seconds and every run yields
the same rows. Customers are generated here from SHA-256 of their id, not `random`, whose
algorithms are not guaranteed stable across Python versions.

Everything is fake: emails use the reserved example.* domains, phones use the fictional
555-01xx range, and the SSN-like values are not issued numbers by construction
(area 9xx is never issued).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.embedded.mariadb import MariaDBServer
    from gateway.embedded.postgres import PostgresServer

__all__ = [
    "CUSTOMERS",
    "EVENTS",
    "ORDERS",
    "TABLES",
    "customer_rows",
    "luhn_check_digit",
    "luhn_valid",
    "mysql_seed_sql",
    "postgres_seed_sql",
    "seed_mariadb",
    "seed_postgres",
]

CUSTOMERS = 1_000
ORDERS = 20_000
EVENTS = 200_000
TABLES = {"customers": CUSTOMERS, "orders": ORDERS, "events": EVENTS}

_FIRST = (  # noqa: SIM905 - a word list reads better than one name per line
    "Ada Alan Amara Ana Arjun Beatriz Chen Chloe Dmitri Elena Emeka Fatima Grace Hana Hugo "
    "Ines Ivan Jamal Julia Kai Kenji Lars Leila Liam Lucia Mateo Maya Mei Nadia Noah Olga "
    "Omar Priya Rafael Sara Sofia Tariq Tomas Yara Zoe"
).split()
_LAST = (  # noqa: SIM905 - a word list reads better than one name per line
    "Abara Becker Castillo Dubois Eriksen Fischer Garcia Haddad Ito Jensen Kowalski Larsen "
    "Moreau Nakamura Novak Okafor Petrov Quinn Rossi Santos Schmidt Silva Tanaka Umarov "
    "Vasquez Weber Xu Yilmaz Zhang Nguyen Kim Patel Murphy Costa Ivanova Lindqvist Mensah "
    "Horvat Kaya Moretti"
).split()
_DOMAINS = ("example.com", "example.org", "example.net")
_KINDS = ("login", "page_view", "search", "add_to_cart", "checkout", "profile_update")
_STATUSES = ("pending", "paid", "shipped", "refunded", "cancelled")


def luhn_check_digit(payload: str) -> int:
    """The digit that makes payload + digit pass the Luhn check (ISO/IEC 7812-1 annex B)."""
    total = 0
    # Double every second digit counting from the right of the full number, i.e. from the
    # rightmost payload digit, since the check digit will occupy the last position.
    for index, char in enumerate(reversed(payload)):
        digit = int(char)
        if index % 2 == 0:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return (10 - total % 10) % 10


def luhn_valid(number: str) -> bool:
    """True when the digits of `number` (spaces and dashes ignored) pass the Luhn check."""
    digits = "".join(c for c in number if c not in " -")
    if not digits.isdigit() or len(digits) < 2:
        return False
    return luhn_check_digit(digits[:-1]) == int(digits[-1])


def _h(customer_id: int, purpose: str) -> int:
    digest = hashlib.sha256(f"gateway-seed:{customer_id}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _card(customer_id: int) -> str:
    pick = _h(customer_id, "brand") % 10
    groups: tuple[int, ...]
    if pick < 5:  # Visa, 16 digits
        prefix, length, groups = "4", 16, (4, 4, 4, 4)
    elif pick < 8:  # Mastercard, 16 digits
        prefix, length, groups = str(51 + _h(customer_id, "mc") % 5), 16, (4, 4, 4, 4)
    else:  # American Express, 15 digits
        prefix, length, groups = ("34", "37")[pick % 2], 15, (4, 6, 5)
    body_len = length - len(prefix) - 1
    body = str(_h(customer_id, "pan")).zfill(20)[-body_len:]
    payload = prefix + body
    number = payload + str(luhn_check_digit(payload))
    if customer_id % 4 == 0:
        # A quarter are stored the way people type them, so detectors see separators too.
        parts, pos = [], 0
        for size in groups:
            parts.append(number[pos : pos + size])
            pos += size
        return " ".join(parts)
    return number


def customer_rows() -> list[tuple[int, str, str, str, str, str, str]]:
    """(id, name, email, ssn, card_number, phone, created_at) for every demo customer."""
    rows = []
    for cid in range(1, CUSTOMERS + 1):
        first = _FIRST[_h(cid, "first") % len(_FIRST)]
        last = _LAST[_h(cid, "last") % len(_LAST)]
        email = f"{first.lower()}.{last.lower()}{cid}@{_DOMAINS[cid % len(_DOMAINS)]}"
        # Area 900-999 is never issued, so these can never be someone's real SSN.
        ssn = (
            f"{900 + _h(cid, 'area') % 100:03d}-{1 + _h(cid, 'group') % 99:02d}-"
            f"{1 + _h(cid, 'serial') % 9999:04d}"
        )
        phone = f"+1-{201 + _h(cid, 'npa') % 700:03d}-555-{100 + cid % 100:04d}"
        day = cid % 365
        created = (
            f"2023-{1 + day // 31 % 12:02d}-{1 + day % 28:02d} {cid % 24:02d}:{cid % 60:02d}:00"
        )
        rows.append((cid, f"{first} {last}", email, ssn, _card(cid), phone, created))
    return rows


def _customer_values() -> str:
    # Values contain only letters, digits, spaces and -+.@: — no quoting hazards in either
    # dialect; assert it so a future name like O'Brien cannot silently break the SQL.
    lines = []
    for row in customer_rows():
        assert all("'" not in str(v) and "\\" not in str(v) for v in row)
        cid, name, email, ssn, card, phone, created = row
        lines.append(f"({cid}, '{name}', '{email}', '{ssn}', '{card}', '{phone}', '{created}')")
    return ",\n".join(lines)


def postgres_seed_sql() -> str:
    """DDL + data for PostgreSQL; drops and recreates the three tables (idempotent)."""
    kinds = ", ".join(f"'{k}'" for k in _KINDS)
    statuses = ", ".join(f"'{s}'" for s in _STATUSES)
    return f"""\
SET client_min_messages = warning;
DROP TABLE IF EXISTS events, orders, customers CASCADE;
BEGIN;
CREATE TABLE customers (
    id integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    email text NOT NULL UNIQUE,
    ssn char(11) NOT NULL,
    card_number text NOT NULL,
    phone text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
    id integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    customer_id integer NOT NULL,
    amount numeric(10,2) NOT NULL,
    status text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE events (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    customer_id integer,
    kind text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO customers (id, name, email, ssn, card_number, phone, created_at) VALUES
{_customer_values()};
INSERT INTO orders (id, customer_id, amount, status, created_at)
SELECT g, (g * 7919) % {CUSTOMERS} + 1,
       ((g * 7907) % 100000) / 100.0 + 1,
       (ARRAY[{statuses}])[g % {len(_STATUSES)} + 1],
       timestamptz '2024-01-01 00:00:00+00' + g * interval '17 minutes'
FROM generate_series(1::bigint, {ORDERS}) AS g;
INSERT INTO events (id, customer_id, kind, payload, created_at)
SELECT g, c.id, (ARRAY[{kinds}])[g % {len(_KINDS)} + 1],
       CASE g % {len(_KINDS)}
         WHEN 4 THEN jsonb_build_object('seq', g, 'cart', g % 97, 'card', c.card_number)
         WHEN 5 THEN jsonb_build_object('seq', g, 'email', c.email, 'phone', c.phone)
         ELSE jsonb_build_object('seq', g, 'page', '/products/' || g % 500,
                                 'ip', '10.' || g % 256 || '.' || g / 256 % 256 || '.1')
       END,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '13 seconds'
FROM generate_series(1::bigint, {EVENTS}) AS g  -- bigint: g * 104729 overflows int4
JOIN customers AS c ON c.id = (g * 104729) % {CUSTOMERS} + 1;
-- Constraints and indexes after the load: one validation pass instead of one per row.
ALTER TABLE orders ADD FOREIGN KEY (customer_id) REFERENCES customers (id);
ALTER TABLE events ADD FOREIGN KEY (customer_id) REFERENCES customers (id);
CREATE INDEX orders_customer_id_idx ON orders (customer_id);
CREATE INDEX events_customer_id_idx ON events (customer_id);
-- Explicit ids were inserted: move the identity sequences past them.
SELECT setval(pg_get_serial_sequence('customers', 'id'), {CUSTOMERS});
SELECT setval(pg_get_serial_sequence('orders', 'id'), {ORDERS});
SELECT setval(pg_get_serial_sequence('events', 'id'), {EVENTS});
COMMIT;
ANALYZE customers, orders, events;
"""


def mysql_seed_sql() -> str:
    """DDL + data for MariaDB (needs the Sequence engine, built in since 10.0)."""
    kinds = ", ".join(f"'{k}'" for k in _KINDS)
    statuses = ", ".join(f"'{s}'" for s in _STATUSES)
    return f"""\
SET SESSION foreign_key_checks = 0, unique_checks = 0;
DROP TABLE IF EXISTS events, orders, customers;
CREATE TABLE customers (
    id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(200) NOT NULL,
    email VARCHAR(255) NOT NULL UNIQUE,
    ssn CHAR(11) NOT NULL,
    card_number VARCHAR(23) NOT NULL,
    phone VARCHAR(32),
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB;
CREATE TABLE orders (
    id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    customer_id INT NOT NULL,
    amount DECIMAL(10,2) NOT NULL,
    status VARCHAR(16) NOT NULL,
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    KEY orders_customer_id_idx (customer_id),
    FOREIGN KEY (customer_id) REFERENCES customers (id)
) ENGINE=InnoDB;
CREATE TABLE events (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    customer_id INT,
    kind VARCHAR(32) NOT NULL,
    payload JSON NOT NULL,
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    KEY events_customer_id_idx (customer_id),
    FOREIGN KEY (customer_id) REFERENCES customers (id)
) ENGINE=InnoDB;
-- No explicit transaction: with the checks off, one transaction around these INSERTs took
-- 12 s on MariaDB 10.11 instead of 1 s as autocommitted statements.
INSERT INTO customers (id, name, email, ssn, card_number, phone, created_at) VALUES
{_customer_values()};
INSERT INTO orders (id, customer_id, amount, status, created_at)
SELECT seq, (seq * 7919) % {CUSTOMERS} + 1,
       ((seq * 7907) % 100000) / 100 + 1,
       ELT(seq % {len(_STATUSES)} + 1, {statuses}),
       TIMESTAMP '2024-01-01 00:00:00' + INTERVAL (seq * 17) MINUTE
FROM seq_1_to_{ORDERS};
INSERT INTO events (id, customer_id, kind, payload, created_at)
SELECT seq, c.id, ELT(seq % {len(_KINDS)} + 1, {kinds}),
       CASE seq % {len(_KINDS)}
         WHEN 4 THEN JSON_OBJECT('seq', seq, 'cart', seq % 97, 'card', c.card_number)
         WHEN 5 THEN JSON_OBJECT('seq', seq, 'email', c.email, 'phone', c.phone)
         ELSE JSON_OBJECT('seq', seq, 'page', CONCAT('/products/', seq % 500),
                          'ip', CONCAT('10.', seq % 256, '.', (seq DIV 256) % 256, '.1'))
       END,
       TIMESTAMP '2024-01-01 00:00:00' + INTERVAL (seq * 13) SECOND
FROM seq_1_to_{EVENTS} JOIN customers AS c ON c.id = (seq * 104729) % {CUSTOMERS} + 1;
SET SESSION foreign_key_checks = 1, unique_checks = 1;
ANALYZE TABLE customers, orders, events;
"""


def seed_postgres(server: PostgresServer, dbname: str = "app", owner: str | None = None) -> None:
    """Create `dbname` if missing (owned by `owner`) and load the demo schema into it.

    With an owner, the tables are created under SET ROLE so the owner (e.g. the gateway's
    upstream role, not a superuser) owns them and can read them without extra grants.
    """
    from gateway.embedded.postgres import pg_quote_ident, pg_quote_literal

    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = {pg_quote_literal(dbname)}")
    if not exists.strip():
        server.create_database(dbname, owner)
    prefix = f"SET ROLE {pg_quote_ident(owner)};\n" if owner else ""
    server.psql(prefix + postgres_seed_sql(), dbname=dbname)


def seed_mariadb(server: MariaDBServer, dbname: str = "app") -> None:
    """Create `dbname` if missing and load the demo schema into it."""
    from gateway.embedded.mariadb import my_quote_ident

    server.sql(
        f"CREATE DATABASE IF NOT EXISTS {my_quote_ident(dbname)} "
        "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;"
    )
    server.sql(mysql_seed_sql(), database=dbname)
