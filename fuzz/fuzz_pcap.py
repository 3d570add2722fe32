"""Fuzz target: the pcap / pcapng / gzip reader (sensor.capture.pcap.PcapSource).

Input: the bytes of a capture file. Every batch it yields is also decoded, so record
offsets and lengths the reader hands out are checked against the buffer they point into.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
with atheris.instrument_imports(include=["sensor"]):
    from sensor.capture import CaptureError
    from sensor.capture import pcap as pcap_mod
    from sensor.decode import decode_batch

pcap_mod.CHUNK = 64 << 10  # small chunks: exercise records split across chunks


class BytesSource(pcap_mod.PcapSource):
    """PcapSource over an in-memory file instead of a path."""

    def __init__(self, data: bytes):
        super().__init__("<fuzz>", batch_size=97)
        self.data = data

    def _open(self):  # type: ignore[override]
        raw = io.BufferedReader(io.BytesIO(self.data))
        if raw.peek(2)[:2] == pcap_mod.GZIP_MAGIC:
            import gzip

            return gzip.GzipFile(fileobj=raw, mode="rb")
        return raw


def test_one_input(data: bytes) -> None:
    src = BytesSource(data)
    try:
        for batch in src.batches():
            end = batch.offset.astype("int64") + batch.caplen
            assert (batch.offset >= 0).all() and (end <= len(batch.data)).all(), \
                "record outside its buffer"
            assert (batch.caplen >= 0).all(), "negative caplen"
            decode_batch(batch)
    except CaptureError:
        pass
    if src.error is not None:
        assert isinstance(src.error, CaptureError)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
