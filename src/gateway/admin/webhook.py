"""The aiohttp side of the approvals webhook (aiohttp is confined to gateway.admin and
gateway.auth; the delivery rules live in gateway.approvals.notify)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import aiohttp

from ..approvals.notify import DeliveryError, WebhookNotifier
from ..config import Config


class AiohttpTransport:
    """One ClientSession for every delivery, created on first use (on the running loop)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=16),
                # No cookies: every delivery stands alone.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
        try:
            async with self._client().post(
                url,
                data=body,
                headers=dict(headers),
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
            ) as response:
                # Read (a bounded amount of) the answer so the connection can be reused.
                await response.content.read(65536)
                return response.status
        except TimeoutError:
            raise DeliveryError(f"no answer within {timeout:g}s") from None
        except aiohttp.ClientSSLError:  # before its base class ClientConnectorError
            raise DeliveryError("TLS handshake with the webhook failed") from None
        except aiohttp.ClientConnectorError as exc:
            reason = exc.os_error.strerror or type(exc.os_error).__name__
            raise DeliveryError(f"cannot connect to {exc.host}:{exc.port}: {reason}") from None
        except aiohttp.ClientError as exc:
            # Class names only: some aiohttp messages repeat the URL (which may hold a token).
            raise DeliveryError(type(exc).__name__) from None
        except OSError as exc:
            raise DeliveryError(exc.strerror or type(exc).__name__) from None

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
            # Let the transports' close callbacks run before the loop goes away.
            await asyncio.sleep(0)


def webhook_notifier(
    config: Config, secret: bytes | None, *, admin_url: str | None = None
) -> WebhookNotifier | None:
    """The broker's notifier for ``[approvals]`` (None without a webhook_url)."""
    section = config.approvals
    if section.webhook_url is None:
        return None
    return WebhookNotifier(
        section.webhook_url,
        transport=AiohttpTransport(),
        secret=secret,
        timeout=section.webhook_timeout,
        admin_url=admin_url,
    )


def alerts_notifier(config: Config, secret: bytes | None) -> WebhookNotifier:
    """The notifier for ``[alerts] webhook_url`` (same transport, signature and retries as
    the approvals webhook; events are sent with ``WebhookNotifier.send``)."""
    section = config.alerts
    assert section.webhook_url is not None
    return WebhookNotifier(
        section.webhook_url,
        transport=AiohttpTransport(),
        secret=secret,
        timeout=section.webhook_timeout,
    )
