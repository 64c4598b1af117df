"""Where and how the gateway connects upstream, for any protocol."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class UpstreamTarget:
    name: str
    host: str
    port: int
    database: str
    user: str
    password: str | None
    tls_mode: str
    tls_ca_file: str | None = None
    tls_server_name: str | None = None
    connect_timeout: float = 10.0
