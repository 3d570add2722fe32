"""Command line: netsensor replay | run | ctl | check-rules | train | eval | version.

User mistakes (missing files, bad config, damaged captures) end in one line on stderr that
names the file and what is wrong, never a traceback. Exit status: 0 all input read and
processed, 1 some input could not be read completely (everything before the damage is
still processed and logged), 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator

from . import __version__
from .capture import CaptureError, PacketBatch
from .capture.pcap import PcapSource
from .config import Config, ConfigError, load_config
from .decode import SUPPORTED_LINKTYPES
from .output.sinks import EveFileSink, SinkError
from .pipeline import Pipeline, StageFailure
from .stages import StageError, build_stages

EXIT_OK, EXIT_INPUT, EXIT_USAGE = 0, 1, 2


def _err(msg: str) -> None:
    print(f"netsensor: {msg}", file=sys.stderr)


class Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, enabled: bool, total_bytes: int | None):
        self.enabled = enabled and sys.stderr.isatty()
        self.total = total_bytes
        self.last = 0.0

    def update(self, packets: int, done_bytes: int | None) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last < 0.2:
            return
        self.last = now
        if self.total and done_bytes is not None:
            frac = min(1.0, done_bytes / self.total)
            bar = "#" * int(frac * 30)
            sys.stderr.write(f"\r[{bar:<30}] {frac * 100:5.1f}% {packets:,} packets")
        else:
            sys.stderr.write(f"\r{packets:,} packets")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 60 + "\r")
            sys.stderr.flush()


def _sources(paths: list[str], cfg: Config, errors: list[str],
             progress: Progress, on_file: Callable[[], None] | None = None,
             ) -> Iterator[PacketBatch]:
    first_cnt = 1
    done = 0
    for path in paths:
        if on_file is not None:  # parallel replay: a file's batches are grouped apart
            on_file()
        src = PcapSource(path, batch_size=cfg.replay.batch_size, first_cnt=first_cnt)
        for batch in src.batches():
            yield batch
            progress.update(src.next_cnt - 1, done + src.offset)
        if src.error is None:
            bad = sorted(lt for lt in src.linktypes if lt not in SUPPORTED_LINKTYPES)
            if bad:
                errors.append(f"{src.name}: unsupported link type {bad[0]}; "
                              f"its packets were counted as decoder.invalid")
        else:
            errors.append(str(src.error))
        done += src.offset
        first_cnt = src.next_cnt


class _ReplaySignals:
    """SIGTERM/SIGINT stop replay between batches, SIGHUP reopens eve.json there.

    Acting between batches, never inside one, is what keeps every event whole: the flows
    still live are then logged by finish() as on a normal end. A second SIGTERM/SIGINT
    stops at once (KeyboardInterrupt), for a replay stuck on a silent stdin.
    """

    def __init__(self) -> None:
        self.stop = ""
        self.hup = False
        self._old = {sig: signal.signal(sig, self._handle)
                     for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}

    def _handle(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:
            self.hup = True
        elif self.stop:
            raise KeyboardInterrupt
        else:
            self.stop = signal.Signals(signum).name

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def cmd_replay(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_USAGE
    try:
        stages = build_stages(cfg, strict=False)
    except StageError as exc:
        _err(str(exc))
        return EXIT_USAGE
    workers = getattr(args, "workers", None) or cfg.replay.workers
    if workers != 1:
        from .replay_parallel import replay_parallel, resolve_workers

        try:
            n_workers = resolve_workers(int(workers) if str(workers).isdigit() else workers)
        except ValueError as exc:
            _err(str(exc))
            return EXIT_USAGE
        if n_workers > 1:
            return replay_parallel(args, cfg, stages, n_workers)
    try:
        sink_cls = EveFileSink
        if cfg.replay.eve_process:
            from .output.eve_worker import WorkerEveSink as sink_cls  # noqa: N813
        sink = sink_cls(os.path.join(args.logdir, cfg.outputs.eve.filename),
                        cfg.outputs.eve.max_pending_bytes) \
            if cfg.outputs.eve.enabled else None
    except SinkError as exc:
        _err(str(exc))
        return EXIT_USAGE
    if cfg.model.enabled:
        from .detect.model_process import use_model_process

        stages = use_model_process(cfg, stages)
    pipe = Pipeline(cfg, sink, stages)
    progress = _replay_progress(args, cfg)
    errors: list[str] = []
    start = time.monotonic()
    packets = 0
    signals = _ReplaySignals()
    try:
        for batch in _sources(args.files, cfg, errors, progress):
            pipe.process(batch)
            packets += len(batch)
            if signals.hup and sink is not None:
                signals.hup = False
                sink.reopen()
            if signals.stop:
                break
        pipe.finish()
    except (SinkError, StageFailure) as exc:
        progress.close()
        _err(str(exc))
        return EXIT_INPUT
    except KeyboardInterrupt:
        progress.close()
        try:
            pipe.finish()
        except (SinkError, StageFailure) as exc:
            _err(str(exc))
        _err("interrupted; flows so far were logged")
        return EXIT_INPUT
    finally:
        signals.restore()
        _close_sink(sink, errors)
    return _end_replay(args, progress, signals, errors, pipe, packets, start)


def _replay_progress(args: argparse.Namespace, cfg: Config) -> Progress:
    """The progress bar of a replay; it shows a fraction when every input is a sized file."""
    total = None
    if all(p != "-" and os.path.isfile(p) for p in args.files):
        total = sum(os.path.getsize(p) for p in args.files)
    return Progress(cfg.replay.progress and not args.quiet, total)


def _close_sink(sink: EveFileSink | None, errors: list[str]) -> None:
    """Close eve.json at the end of a replay; a failure there is one more input error."""
    if sink is not None:
        try:
            sink.close()
        except SinkError as exc:  # the last events could not be written either
            _err(f"{exc}; {sink.dropped} event(s) were not written")
            errors.append(str(exc))


def _end_replay(args: argparse.Namespace, progress: Progress, signals: _ReplaySignals,
                errors: list[str], counted: Pipeline, packets: int, start: float) -> int:
    """The end of every replay (one process or many): say why it stopped or what went
    wrong, print the summary of `counted`, and pick the exit status."""
    if signals.stop:
        progress.close()
        _err(f"stopped by {signals.stop}; flows so far were logged")
        return EXIT_INPUT
    progress.close()
    secs = time.monotonic() - start
    for e in errors:
        _err(e)
    if not args.quiet:
        _summary(counted, packets, secs)
    return EXIT_INPUT if errors else EXIT_OK


def _summary(pipe: Pipeline, packets: int, secs: float) -> None:
    c = pipe.all_counters()
    rate = packets / secs if secs > 0 else 0.0
    out = sys.stderr
    print(f"packets: {packets:,}  invalid: {c.get('decoder.invalid', 0):,}  "
          f"not IP: {c.get('decoder.arp', 0) + c.get('decoder.unknown_ethertype', 0):,}  "
          f"IP without flow tracking: {c.get('decoder.other_ip_proto', 0):,}", file=out)
    print(f"flows: {c.get('flow.total', 0):,}  (tcp {c.get('flow.tcp', 0):,}, "
          f"udp {c.get('flow.udp', 0):,}, icmp "
          f"{c.get('flow.icmpv4', 0) + c.get('flow.icmpv6', 0):,}, evicted "
          f"{c.get('flow.get_used', 0):,})", file=out)
    events = ", ".join(f"{k} {v:,}" for k, v in sorted(pipe.events.items())) or "none"
    print(f"events: {events}", file=out)
    if pipe.alerts_by_sig:
        print("alerts by signature:", file=out)
        for sig, count in pipe.alerts_by_sig.most_common():
            print(f"  {count:8,}  {sig}", file=out)
    print(f"time: {secs:.2f} s  ({rate:,.0f} packets/s)", file=out)


def cmd_check_rules(args: argparse.Namespace) -> int:
    from .detect.rules.check import check_rules_main

    return check_rules_main([*(["-c", args.config] if args.config else []), *args.files])


def build_parser(replay_only: bool = False) -> argparse.ArgumentParser:
    """All subcommands; `replay_only` skips importing the others' modules (replay start-up
    time counts in every benchmark, and `run`/`train`/`eval` pull in much more)."""
    p = argparse.ArgumentParser(prog="netsensor", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("replay", help="replay pcap/pcapng files (or - for stdin) to EVE JSON")
    r.add_argument("files", nargs="+", metavar="FILE")
    r.add_argument("-l", "--logdir", default=".", help="directory for eve.json (default .)")
    r.add_argument("-c", "--config", help="YAML config (built-in defaults otherwise)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    r.add_argument("-w", "--workers", metavar="N",
                   help="worker processes, or auto for one per core (replay.workers; "
                        "default 1)")
    r.set_defaults(fn=cmd_replay)
    if replay_only:
        return p
    from .ctl import add_ctl_parser
    from .daemon import add_run_parser
    from .eval import add_eval_parser
    from .learn import add_learn_parser
    from .train import add_train_parser

    add_run_parser(sub)
    add_ctl_parser(sub)
    add_train_parser(sub)
    add_learn_parser(sub)
    add_eval_parser(sub)
    c = sub.add_parser("check-rules", help="validate Suricata rule files")
    c.add_argument("-c", "--config", metavar="CONFIG",
                   help="take rule variables (vars.*) from this netsensor config")
    c.add_argument("files", nargs="+", metavar="FILE")
    c.set_defaults(fn=cmd_check_rules)
    v = sub.add_parser("version", help="print the version")
    v.set_defaults(fn=lambda a: print(f"netsensor {__version__}") or EXIT_OK)
    return p


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    args = build_parser(replay_only=words[:1] == ["replay"]).parse_args(argv)
    try:
        return int(args.fn(args))
    except BrokenPipeError:
        return EXIT_INPUT
    except CaptureError as exc:
        _err(str(exc))
        return EXIT_INPUT


if __name__ == "__main__":
    sys.exit(main())
