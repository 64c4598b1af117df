"""Type stub of the compiled message scanner and Bind parser (_wire.c); see
framing.MessageScanner.feed and messages.parse_bind."""

from collections.abc import Callable
from typing import TypeVar

_T = TypeVar("_T", bound=tuple[object, ...])

def scan(
    buf: bytes, limit: int, collapse: bool, /
) -> tuple[list[tuple[int, int, int, int]], int, int]: ...
def parse_bind(
    bind_type: type[_T], violation: Callable[[str], BaseException], body: bytes, /
) -> _T: ...

class ReadPump:
    """pump.ReadPumpPy, compiled."""

    def __init__(
        self,
        scanner: object,
        tracker: object,
        write: Callable[..., object],
        slow: Callable[..., object],
        failed: Callable[[Exception], object],
        *,
        backend: bool,
        run: bool = ...,
        rows: Callable[..., object] | None = ...,
        unless: tuple[object, str] | None = ...,
    ) -> None: ...
    def __call__(self, data: bytes, /) -> None: ...
