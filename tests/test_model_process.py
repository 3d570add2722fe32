"""sensor/detect/model_process.py: windows and scoring in a second process (replay)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import pytest
from replay_helpers import ListSink

from sensor.capture.pcap import PcapSource
from sensor.config import Config, ConfigError, ReplayConfig, load_config
from sensor.detect import model_process
from sensor.detect.model import ModelStage
from sensor.detect.model_process import ModelProcessError, ModelProcessStage, use_model_process
from sensor.pipeline import Pipeline
from sensor.stages import build_stages

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "pcaps" / "sample.pcap"
BENIGN = REPO / "pcaps" / "model" / "bn-5101.pcap.gz"
BASELINE = REPO / "models" / "site-baseline.onnx"


def _config(monkeypatch, process: bool | str, baseline: bool = False,
            rules: str | None = None) -> Config:
    """netsensor.yaml (rules, thresholds, the shipped model), model_process as given."""
    monkeypatch.chdir(REPO)  # the config's rule paths are relative to the checkout
    cfg = load_config(str(REPO / "netsensor.yaml"))
    if baseline:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(
            cfg.model, baselines=(str(BASELINE),)))
    if rules is not None:
        cfg = dataclasses.replace(cfg, rules=dataclasses.replace(cfg.rules, files=(rules,)))
    return dataclasses.replace(cfg, replay=ReplayConfig(model_process=process))


def _run(cfg: Config, pcap: Path, batch_size: int = 4096) -> tuple[list[str], Pipeline]:
    stages = use_model_process(cfg, build_stages(cfg, strict=False))
    sink = ListSink()
    pipe = Pipeline(cfg, sink, stages, flow_seed=7)  # type: ignore[arg-type]
    for b in PcapSource(str(pcap), batch_size=batch_size).batches():
        pipe.process(b)
    pipe.finish()
    return list(sink.lines), pipe


def _events(lines: list[str]) -> list[str]:
    """Every line but interval stats (their ml.* counters lag one batch in the process)."""
    return sorted(x for x in lines if '"event_type":"stats"' not in x)


@pytest.mark.parametrize("pcap,baseline", [(SAMPLE, False), (BENIGN, True)])
def test_same_events_as_in_process(monkeypatch, pcap, baseline):
    """Alerts (rules and model), flow events with their verdict metadata and `alerted`, the
    final stats: line for line what the in-process stage writes, in another order."""
    inproc, p1 = _run(_config(monkeypatch, False, baseline), pcap)
    other, p2 = _run(_config(monkeypatch, True, baseline), pcap)
    assert not any(isinstance(s, ModelProcessStage) for s in p1.stages)
    assert any(isinstance(s, ModelProcessStage) for s in p2.stages)
    assert _events(other) == _events(inproc)
    assert sum('"metadata":{"flowvars"' in x for x in other) > 100
    if pcap == SAMPLE:
        assert sum('"gid":9000,' in x for x in other) >= 5
        assert sum('"gid":1,' in x for x in other) >= 5
    if baseline:
        assert sum('"ml_anomaly_permille"' in x for x in other) > 100
    last = [json.loads(x) for x in (inproc[-1], other[-1])]
    assert last[0]["event_type"] == last[1]["event_type"] == "stats"
    for s in last:
        s["stats"]["detect"]["engines"][0].pop("last_reload", None)
    assert last[0] == last[1]
    assert p1.alerts_by_sig == p2.alerts_by_sig


def test_output_order_does_not_depend_on_timing(monkeypatch):
    """The points where the replay waits for answers are fixed: two runs write the same
    lines in the same order, however fast the worker was."""
    cfg = _config(monkeypatch, True)
    runs = [_run(cfg, SAMPLE, batch_size=512)[0] for _ in range(2)]
    first, second = ([re.sub(r'"last_reload":"[^"]*"', "", x) for x in r] for r in runs)
    assert first == second


def test_a_small_ring_wraps_and_large_batches_go_by_the_pipe(monkeypatch):
    """Packet rows go through the shared ring, reused in turn; a batch larger than the ring
    goes by the pipe. Either way the events are the in-process events."""
    cfg = _config(monkeypatch, True)
    inproc, _ = _run(_config(monkeypatch, False), SAMPLE, batch_size=300)
    monkeypatch.setattr(model_process, "RING_BYTES", 96 * 1000)  # ~1,000 packet rows
    sent = []
    orig = ModelProcessStage._send

    def spy(self, msg, ended):
        if msg[0] == "batch":  # (start, rows) in the ring, or the rows themselves
            sent.append(msg[1][0] if isinstance(msg[1], tuple) else None)
        orig(self, msg, ended)

    monkeypatch.setattr(ModelProcessStage, "_send", spy)
    small, _ = _run(cfg, SAMPLE, batch_size=300)
    assert _events(small) == _events(inproc)
    assert None not in sent and sent.count(0) >= 5  # every batch fit; the ring went round
    sent.clear()
    large, _ = _run(cfg, SAMPLE, batch_size=4096)
    assert _events(large) == _events(inproc)
    assert None in sent and any(s is not None for s in sent)


def test_ml_rules_and_one_core_keep_the_in_process_stage(monkeypatch, tmp_path):
    rules = tmp_path / "ml.rules"
    rules.write_text('alert ip any any -> any any (msg:"ml flood"; ml.class:flood; '
                     'sid:1; rev:1;)\n')
    cfg = _config(monkeypatch, True, rules=str(rules))
    stages = use_model_process(cfg, build_stages(cfg))
    assert any(isinstance(s, ModelStage) for s in stages)  # rules read the verdict at once
    cfg = _config(monkeypatch, "auto")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert any(isinstance(s, ModelStage) for s in use_model_process(cfg, build_stages(cfg)))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    stages = use_model_process(cfg, build_stages(cfg))
    assert any(isinstance(s, ModelProcessStage) for s in stages)
    next(s for s in stages if isinstance(s, ModelProcessStage)).close()
    # with the EVE process on, two cores are taken already
    cfg = dataclasses.replace(cfg, replay=ReplayConfig(model_process="auto", eve_process=True))
    assert any(isinstance(s, ModelStage) for s in use_model_process(cfg, build_stages(cfg)))
    cfg = _config(monkeypatch, False)
    assert any(isinstance(s, ModelStage) for s in use_model_process(cfg, build_stages(cfg)))


def test_config_value_is_checked(tmp_path):
    path = tmp_path / "c.yaml"
    for value, ok in (("auto", True), ("true", True), ("false", True), ("maybe", False),
                      ("2", False)):
        path.write_text(f"replay:\n  model_process: {value}\n")
        if ok:
            load_config(str(path))
        else:
            with pytest.raises(ConfigError, match="replay.model_process"):
                load_config(str(path))


def test_a_dead_worker_is_one_clear_error(monkeypatch):
    """The scoring process killed mid-replay: the replay stops with ModelProcessError (a
    StageFailure, which `netsensor replay` reports in one line), it does not hang."""
    cfg = _config(monkeypatch, True)
    stages = use_model_process(cfg, build_stages(cfg, strict=False))
    proxy = next(s for s in stages if isinstance(s, ModelProcessStage))
    pipe = Pipeline(cfg, ListSink(), stages)  # type: ignore[arg-type]
    batches = PcapSource(str(SAMPLE), batch_size=256).batches()
    pipe.process(next(batches))
    proxy._proc.kill()
    proxy._proc.join()
    with pytest.raises(ModelProcessError, match="model scoring process"):
        for b in batches:
            pipe.process(b)
        pipe.finish()


def test_replay_cli_with_the_model_process(tmp_path, monkeypatch, capsys):
    """`netsensor replay` as a user runs it, model process forced on: model alerts and
    flow verdicts in eve.json, the summary counts the model's alerts."""
    from sensor.cli import main

    monkeypatch.chdir(REPO)
    cfg = tmp_path / "c.yaml"
    cfg.write_text((REPO / "netsensor.yaml").read_text() + "\nreplay:\n  model_process: true\n")
    assert main(["replay", str(SAMPLE), "-l", str(tmp_path), "-c", str(cfg)]) == 0
    err = capsys.readouterr().err
    assert "[9000:" in err
    evs = [json.loads(x) for x in (tmp_path / "eve.json").read_text().splitlines()]
    assert any(e["event_type"] == "alert" and e["alert"]["gid"] == 9000 for e in evs)
    flows = [e for e in evs if e["event_type"] == "flow"]
    assert sum("metadata" in e for e in flows) > 0.9 * len(flows)
    # with the EVE process too (three processes): the same events (flow ids are per run)
    both = tmp_path / "both"
    both.mkdir()
    cfg.write_text(cfg.read_text() + "  eve_process: true\n")
    assert main(["replay", str(SAMPLE), "-q", "-l", str(both), "-c", str(cfg)]) == 0

    def events(path: Path) -> list[str]:
        return sorted(re.sub(r'"flow_id":\d+,', "", x) for x in path.read_text().splitlines()
                      if '"event_type":"stats"' not in x)

    assert events(both / "eve.json") == events(tmp_path / "eve.json")


def test_worker_failures_reach_the_replay_in_one_line(monkeypatch, capsys):
    """A model that cannot be loaded in the worker (changed since the replay checked it) is
    one line, no traceback; a bug in the worker is one line plus its traceback on stderr.
    Either way the replay stops instead of hanging."""
    from sensor.detect.model import ModelError

    def missing(cfg):
        raise ModelError("model /gone.onnx: no such file")

    cfg = _config(monkeypatch, True)
    monkeypatch.setattr(model_process, "build_model_stage", missing)  # the fork inherits it
    with pytest.raises(ModelProcessError) as err:
        _run(cfg, SAMPLE)
    assert str(err.value) == "model scoring process: model /gone.onnx: no such file"
    assert "Traceback" not in capsys.readouterr().err
    monkeypatch.undo()

    def broken(self, *args):
        raise RuntimeError("boom")

    cfg = _config(monkeypatch, True)
    monkeypatch.setattr(ModelStage, "on_packets", broken)
    with pytest.raises(ModelProcessError, match="^model scoring process: RuntimeError: boom$"):
        _run(cfg, SAMPLE)
    assert "Traceback" in capsys.readouterr().err
