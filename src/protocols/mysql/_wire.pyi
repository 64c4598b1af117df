"""Type stub of the compiled MySQL packet scanner state and fast paths (_wire.c); see
framing.PacketScanner."""

class ScannerCore:
    _buf: bytes
    _pos: int
    _acc: bytearray | None
    _need: int
    _broken: BaseException | None
    max_payload: int
    expected_seq: int | None
    def feed(self, data: bytes | bytearray | memoryview, /) -> None: ...
    def next_packet(self) -> tuple[int, int] | None: ...
    def next_row_run(self) -> tuple[int, int, int]: ...
