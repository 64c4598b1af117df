"""Sans-I/O wire-protocol codecs: bytes in, events/bytes out.

Rule (enforced by tests/unit/test_layering.py): nothing here imports asyncio, the
``gateway`` package, msgspec, sqlglot or jwt. Only the MySQL RSA step may use
``cryptography``.
"""
