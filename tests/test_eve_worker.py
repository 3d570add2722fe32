"""sensor.output.eve_worker: EVE written by a forked worker is the same file, errors still raise.

`replay.eve_process` moves flow-line formatting and file writes to a second process; the
output must not change by a byte (same replay with a fixed flow seed, both sinks), and a
write failure in the worker (a real one: /dev/full) must reach the replay as SinkError.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sensor.capture.pcap import PcapSource
from sensor.config import Config, ReplayConfig
from sensor.output.eve_worker import WorkerEveSink
from sensor.output.sinks import EveFileSink, SinkError
from sensor.pipeline import Pipeline

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "pcaps" / "sample.pcap"


def _replay(sink: EveFileSink | WorkerEveSink) -> Pipeline:
    pipe = Pipeline(Config(replay=ReplayConfig(eve_process=True)), sink, flow_seed=11)
    for batch in PcapSource(str(SAMPLE), batch_size=1000).batches():
        pipe.process(batch)
    pipe.finish()
    sink.close()
    return pipe


def test_worker_writes_the_same_file(tmp_path: Path) -> None:
    plain = _replay(EveFileSink(str(tmp_path / "plain.json")))
    worker_sink = WorkerEveSink(str(tmp_path / "worker.json"))
    worker = _replay(worker_sink)
    want = (tmp_path / "plain.json").read_bytes()
    assert want.count(b'"event_type":"flow"') > 1000
    assert (tmp_path / "worker.json").read_bytes() == want
    assert worker.events == plain.events
    assert worker_sink.lines == want.count(b"\n")
    assert not worker_sink._proc.is_alive()


def test_worker_write_failure_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    with pytest.raises(SinkError, match="cannot open"):
        WorkerEveSink(str(blocker / "eve.json"))  # a file where the directory should be
    sink = WorkerEveSink("/dev/full")  # every write fails with ENOSPC
    with pytest.raises(SinkError, match="/dev/full"):
        for _ in range(500):  # the worker reports the failure; the next call raises it
            sink.write(['{"event_type":"stats"}'] * 1000)
            sink.flush()
            time.sleep(0.01)
    with pytest.raises(SinkError, match="No space left"):
        sink.close()  # the CLI's close in `finally`: the lines were not written, say so
    sink.close()  # and a further close returns at once
    assert not sink._proc.is_alive()
