"""Fuzz target: the batch decoder, defragmenter and flow table (a whole Pipeline, no sink).

Input: one linktype byte, then frames as (2-byte big-endian length, bytes). Frames get
timestamps a little apart, so flows, timeouts and fragment trackers all see real use.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
with atheris.instrument_imports(include=["sensor"]):
    from sensor.capture import BATCH_PAD, PacketBatch
    from sensor.config import Config
    from sensor.decode import decode_batch
    from sensor.pipeline import Pipeline

LINKTYPES = (0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 147)


def frames_batch(data: bytes) -> PacketBatch | None:
    if not data:
        return None
    lt = LINKTYPES[data[0] % len(LINKTYPES)]
    pos = 1
    offs, caps = [], []
    while pos + 2 <= len(data):
        n = int.from_bytes(data[pos:pos + 2], "big") % 2048
        pos += 2
        frame_len = min(n, len(data) - pos)
        offs.append(pos)
        caps.append(frame_len)
        pos += frame_len
    if not offs:
        return None
    buf = np.frombuffer(data + bytes(BATCH_PAD), dtype=np.uint8)
    k = len(offs)
    ts = 1_700_000_000_000_000 + np.arange(k, dtype=np.int64) * 7_000_000
    return PacketBatch(
        data=buf, offset=np.asarray(offs, dtype=np.int64),
        caplen=np.asarray(caps, dtype=np.int32), wirelen=np.asarray(caps, dtype=np.int32),
        ts_us=ts, linktype=np.full(k, lt, dtype=np.uint16), first_cnt=1,
    )


CFG = Config()


def test_one_input(data: bytes) -> None:
    batch = frames_batch(data)
    if batch is None:
        return
    d = decode_batch(batch)
    assert d.counters["decoder.pkts"] == len(batch)
    ok = np.flatnonzero(d.ok)
    if len(ok):
        end = batch.offset[ok] + batch.caplen[ok]
        assert (d.poff[ok] + d.plen[ok] <= end).all(), "payload past the frame"
        assert (d.plen[ok] >= 0).all(), "negative payload length"
    pipe = Pipeline(CFG, None, flow_seed=1)
    pipe.process(batch)
    pipe.finish()


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
