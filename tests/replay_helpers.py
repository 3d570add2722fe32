"""Shared by the replay tests: packets -> real pcap file -> PcapSource -> Pipeline -> EVE.

Packets are written with dpkt's pcap writer and read back with sensor.capture.pcap, so the
flow table and the stages see exactly what `netsensor replay` feeds them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import dpkt
import pytest

from sensor.capture.pcap import PcapSource
from sensor.config import Config
from sensor.output.sinks import MemorySink
from sensor.pipeline import Pipeline, Stage

MACS = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
SCHEMA = Path(__file__).resolve().parents[2] / "shared" / "eve-schema" / "schema-7.0.10.json"


class ListSink(MemorySink):
    """Collects EVE lines in memory (the pipeline's sink interface), parsed on demand."""

    def events(self, event_type: str | None = None) -> list[dict[str, Any]]:
        evs = [json.loads(x) for x in self.lines]
        return [e for e in evs if event_type is None or e["event_type"] == event_type]


def write_pcap(path: Path, frames: Sequence[bytes], times: Sequence[float],
               linktype: int = 1) -> Path:
    with open(path, "wb") as f:
        w = dpkt.pcap.Writer(f, linktype=linktype)
        for fr, ts in zip(frames, times, strict=True):
            w.writepkt(bytes(fr), ts=ts)
    return path


def replay(path: Path, cfg: Config | None = None, batch_size: int = 65536,
           stages: list[Stage] | None = None) -> tuple[ListSink, Pipeline]:
    """Run one pcap through a Pipeline as `netsensor replay` does; return EVE and pipeline."""
    cfg = cfg or Config()
    sink = ListSink()
    pipe = Pipeline(cfg, sink, stages)  # type: ignore[arg-type]
    src = PcapSource(str(path), batch_size=batch_size)
    for batch in src.batches():
        pipe.process(batch)
    pipe.finish()
    assert src.error is None, src.error
    return sink, pipe


def replay_frames(tmp_path: Path, frames: Sequence[bytes], times: Sequence[float],
                  cfg: Config | None = None, batch_size: int = 65536,
                  name: str = "t.pcap") -> tuple[ListSink, Pipeline]:
    return replay(write_pcap(tmp_path / name, frames, times), cfg, batch_size)


@cache
def _eve_validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    return jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))


def require_eve_schema() -> None:
    """Skip a test whose point is the schema check where ../shared (the task's shared data,
    beside the checkout) is not there, as the conformance tests skip without their corpus:
    a fresh clone elsewhere runs the rest of the suite."""
    if not SCHEMA.exists():
        pytest.skip(f"Suricata's EVE schema is not present ({SCHEMA})")


def assert_eve_schema(events: Sequence[dict[str, Any]]) -> None:
    """Every event validates against Suricata 7.0.10's EVE schema (where ../shared has it;
    a test that needs the schema calls require_eve_schema() first). Skips without
    jsonschema."""
    if SCHEMA.exists():
        v = _eve_validator()
        for e in events:
            errs = list(v.iter_errors(e))
            assert not errs, (e, errs[0].message, list(errs[0].path))
