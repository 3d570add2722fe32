"""Shared pieces of the atheris fuzz targets: seed corpora and the crash verdict.

A target treats the errors the sensor raises on purpose for bad input (CaptureError,
ConfigError, RuleSyntaxError) as a pass; any other exception, a hang or runaway memory is
a finding. Seed corpora are built from the project's own pcaps, rules and configs, so the
fuzzer starts from valid structure instead of random bytes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEEDS = Path(__file__).resolve().parent / "seeds"
SHARED_RULESETS = ROOT.parent / "shared" / "rulesets" / "et-open-2024-04.tar.gz"
MAX_SEED = 64 << 10  # libFuzzer's -max_len is set from the seeds; keep them small


def _put(corpus: Path, name: str, data: bytes) -> None:
    (corpus / name).write_bytes(data[:MAX_SEED])


def seed_pcap(corpus: Path) -> None:
    """Every capture in pcaps/formats/ plus the head of the sample capture."""
    for p in sorted((ROOT / "pcaps" / "formats").iterdir()):
        if p.suffix in (".pcap", ".pcapng", ".gz", ".bin"):
            _put(corpus, p.name, p.read_bytes())
    sample = ROOT / "pcaps" / "sample.pcap"
    if sample.exists():
        with open(sample, "rb") as f:
            _put(corpus, "sample-head.pcap", f.read(MAX_SEED))


def seed_decode(corpus: Path) -> None:
    """Frames as the decode target reads them: a linktype byte, then frames (see there)."""
    import sys

    sys.path.insert(0, str(ROOT))
    from sensor.capture.pcap import PcapSource

    for p in sorted((ROOT / "pcaps" / "formats").glob("*.pcap")):
        src = PcapSource(str(p), batch_size=64)
        for batch in src.batches():
            lt = int(batch.linktype[0]) & 0xFF
            out = bytearray([lt])
            for i in range(min(len(batch), 24)):
                frame = batch.frame(i)[:1500]
                out += len(frame).to_bytes(2, "big") + frame
            _put(corpus, p.stem + ".frames", bytes(out))
            break


def seed_rules(corpus: Path) -> None:
    """One rule per seed: the committed ET Open sample, and rules/ (shipped rule files)."""
    files = [SEEDS / "et-open-sample.rules", *sorted((ROOT / "rules").glob("*.rules"))]
    n = 0
    for f in files:
        if not f.exists():
            continue
        for line in f.read_text(errors="replace").splitlines():
            if line.startswith(("alert", "drop", "pass", "reject")):
                _put(corpus, f"rule{n:04d}", line.encode())
                n += 1


def seed_config(corpus: Path) -> None:
    for p in sorted(SEEDS.glob("configs/*.yaml")):
        _put(corpus, p.name, p.read_bytes())
    flows = ROOT / "pcaps" / "suricata-flows.yaml"
    if flows.exists():
        _put(corpus, flows.name, flows.read_bytes())


SEEDERS = {"pcap": seed_pcap, "decode": seed_decode, "rules": seed_rules,
           "config": seed_config}


def build_corpus(target: str, where: Path) -> Path:
    """A fresh seed corpus for `target` in `where` (libFuzzer adds what it finds there)."""
    corpus = where / target
    if corpus.exists():
        shutil.rmtree(corpus)
    corpus.mkdir(parents=True)
    SEEDERS[target](corpus)
    regress = ROOT / "tests" / "data" / "fuzz-regressions" / target
    if regress.is_dir():
        for p in regress.iterdir():
            shutil.copy(p, corpus / ("regress-" + p.name))
    return corpus


if __name__ == "__main__":
    import sys

    out = Path(sys.argv[2] if len(sys.argv) > 2 else os.environ.get("TMPDIR", "/tmp"))
    print(build_corpus(sys.argv[1], out))
