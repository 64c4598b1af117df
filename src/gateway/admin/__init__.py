"""The admin HTTP API (docs/approvals.md) and the aiohttp side of the approvals webhook."""

from .api import build_app
from .listener import AdminServer, start_admin
from .webhook import AiohttpTransport, alerts_notifier, webhook_notifier

__all__ = [
    "AdminServer",
    "AiohttpTransport",
    "alerts_notifier",
    "build_app",
    "start_admin",
    "webhook_notifier",
]
