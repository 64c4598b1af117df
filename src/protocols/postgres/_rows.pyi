"""Type stub of the compiled DataRow rewriter (_rows.c); see rows.rewrite_data_rows."""

from collections.abc import Callable, Sequence

def rewrite(
    buf: bytes | bytearray,
    start: int,
    stop: int,
    columns: Sequence[tuple[int, Callable[[bytes], bytes | None]]],
    constant_type: type,
    screened_type: type,
    violation: Callable[[str], BaseException],
    /,
) -> bytearray: ...
