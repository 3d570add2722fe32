"""`netsensor replay -w N`: one reader process, N worker processes running the normal Pipeline.

The parent reads the capture in batches (PcapSource), decodes each batch once to learn the
addresses, and gives every packet to the worker its IP address pair hashes to. The hash is
symmetric and uses the addresses only, so what the single-process run puts in one flow
always lands in one worker: both directions, every fragment of a datagram (defrag runs in
the worker), a tunnel's outer packets with the flows inside them, and an ICMPv4 error with
the flow it quotes (hashed on the quoted pair, as sensor.flow joins it to that flow).

Frame bytes travel through shared memory: the parent copies a batch's bytes once into one
of SLOTS segments, each worker copies them out into its own buffer and acknowledges, and a
pipe carries each worker's share of the per-packet arrays (offsets, lengths, timestamps and
the global pcap_cnt). Every batch also carries the batch's newest timestamp, so each
worker's flow clock (timeouts) moves as the single-process clock does.

Each worker writes EVE to its own temporary file beside eve.json; at the end the parent
appends them to eve.json and writes one stats event with the summed counters (the
daemon's `aggregate`). All workers use the same flow-hash seed, so flow_id is what the
single-process run with that seed gives, and unique across workers. Periodic stats events
are not written in this mode.

Where outputs can differ from one process: only under the per-worker limits (each worker
has its own flow table of flow.max_flows and its own defrag limits, so eviction under
pressure happens later), and for rule thresholds tracked by_src/by_dst across different
address pairs (each worker counts its own share).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np

from .capture import BATCH_PAD, LINKTYPE_ETHERNET, PacketBatch
from .capture.pcap import CHUNK
from .config import Config
from .decode import (
    ETH_IPV4,
    ETH_IPV6,
    PROTO_ICMP,
    VLAN_TPIDS,
    DecodedBatch,
    _Reader,
    decode_batch,
)
from .output.eve import stats_event
from .output.sinks import EveFileSink, SinkError
from .pipeline import Pipeline, Stage

SLOTS = 3  # groups of batches in flight between the reader and the workers
GROUP_BYTES = 12 << 20  # frame bytes per group sent to the workers (3 read chunks)
MAX_GROUP = 8  # batches per group at most (many tiny batches: stdin, pcapng)
# a group's frame bytes (GROUP_BYTES plus the batch that crossed it) and its columns (39
# bytes a packet); a bigger group goes through the pipe instead. Pages are touched as used.
SLOT_BYTES = GROUP_BYTES + 2 * CHUNK + (16 << 20)
MAX_WORKERS = 64
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


class WorkerFailed(Exception):
    """A replay worker stopped with an error; the message says which and why."""


def resolve_workers(value: int | str) -> int:
    """`replay.workers` / `-w`: a count, or "auto" for the cores this process may use."""
    if value == "auto":
        return max(1, min(MAX_WORKERS, len(os.sched_getaffinity(0))))
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_WORKERS:
        return value
    raise ValueError(f"replay.workers must be auto or 1..{MAX_WORKERS}, not {value!r}")


def _mix(x: np.ndarray) -> np.ndarray:
    x = x * _GOLDEN
    return x ^ (x >> np.uint64(29))


def worker_of(d: DecodedBatch, n_workers: int) -> np.ndarray:
    """The worker of every packet: a symmetric hash of its IP address pair.

    ICMPv4 errors that quote a TCP/UDP header go by the quoted pair, the flow they join.
    Frames without addresses (ARP, invalid) hash on zeros; they only add to counters.
    """
    src_hi, src_lo, dst_hi, dst_lo = d.src_hi, d.src_lo, d.dst_hi, d.dst_lo
    if d.icmp_err is not None and d.icmp_emb is not None:
        q = d.icmp_err & d.icmp_emb["ok"]
        if q.any():
            src_hi, dst_hi = np.where(q, 0, src_hi), np.where(q, 0, dst_hi)
            src_lo = np.where(q, d.icmp_emb["src"], src_lo)
            dst_lo = np.where(q, d.icmp_emb["dst"], dst_lo)
    return _pair_hash(src_hi, src_lo, dst_hi, dst_lo, n_workers)


def _pair_hash(src_hi: np.ndarray, src_lo: np.ndarray, dst_hi: np.ndarray,
               dst_lo: np.ndarray, n_workers: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        a = _mix(src_hi.astype(np.uint64) ^ _mix(src_lo.astype(np.uint64)))
        b = _mix(dst_hi.astype(np.uint64) ^ _mix(dst_lo.astype(np.uint64)))
        h = _mix(a + b)  # + is symmetric: both directions get the same value
    return ((h >> np.uint64(32)) % np.uint64(n_workers)).astype(np.int64)



def assign_workers(batch: PacketBatch, n_workers: int) -> np.ndarray:
    """worker_of() for a whole batch, decoding fully only what the common case does not cover.

    Ethernet frames (up to two VLAN tags) with IPv6, or IPv4 that is not ICMP, are hashed
    from their addresses read in place, the same values decode_batch gives; the rest (other
    link types, ICMPv4 that may quote a flow, short frames) goes through decode_batch.
    """
    r = _Reader(batch.data)
    off = batch.offset
    l3 = off + 14
    etype = r.u16(off + 12)
    for _ in range(2):
        tagged = np.isin(etype, VLAN_TPIDS)
        l3 = np.where(tagged, l3 + 4, l3)
        etype = np.where(tagged, r.u16(l3 - 2), etype)
    room = batch.caplen - (l3 - off)
    eth = batch.linktype == LINKTYPE_ETHERNET
    v4 = eth & (etype == ETH_IPV4) & (room >= 20)
    v4 &= r.u8(l3 + 9) != PROTO_ICMP
    v6 = eth & (etype == ETH_IPV6) & (room >= 40)
    # bytes 8..40 of the IP header in one gather: the IPv6 addresses, or the IPv4 ones at
    # 12..20, as the big-endian values decode_batch reads
    pos = np.minimum(l3 + 8, len(batch.data) - 32)
    head = batch.data[pos[:, None] + np.arange(32)]
    six = head.view(">u8").astype(np.uint64)
    four = head[:, 4:12].copy().view(">u4").astype(np.uint64)
    zero = np.zeros(len(off), dtype=np.uint64)
    src_hi = np.where(v6, six[:, 0], zero)
    src_lo = np.where(v6, six[:, 1], four[:, 0])
    dst_hi = np.where(v6, six[:, 2], zero)
    dst_lo = np.where(v6, six[:, 3], four[:, 1])
    who = _pair_hash(src_hi, src_lo, dst_hi, dst_lo, n_workers)
    rest = np.flatnonzero(~(v4 | v6))
    if len(rest):
        sub = PacketBatch(data=batch.data, offset=off[rest], caplen=batch.caplen[rest],
                          wirelen=batch.wirelen[rest], ts_us=batch.ts_us[rest],
                          linktype=batch.linktype[rest], first_cnt=0)
        who[rest] = worker_of(decode_batch(sub), n_workers)
    return who


# -- the slot layout: frame bytes, then the per-packet columns ------------------------------

def _layout(nbytes: int, cols: dict[str, np.ndarray]) -> list[tuple[str, str, int]]:
    """(name, dtype, end) of every part of a slot; "data" first, each part 8-byte aligned."""
    out = [("data", "u1", nbytes)]
    pos = (nbytes + 7) & ~7
    for name, arr in cols.items():
        pos += arr.nbytes
        out.append((name, arr.dtype.str, pos))
        pos = (pos + 7) & ~7
    return out


def _pack(buf: Any, layout: list[tuple[str, str, int]], data: list[np.ndarray],
          cols: dict[str, np.ndarray]) -> None:
    """Write the frame bytes (`data`, one part per batch, back to back) and the columns."""
    start = 0
    for name, _dtype, _end in layout:
        srcs = data if name == "data" else [cols[name].view(np.uint8)]
        for src in srcs:
            np.ndarray((len(src),), dtype=np.uint8, buffer=buf, offset=start)[:] = src
            start += len(src)
        start = (start + 7) & ~7


def _unpack(buf: Any, layout: list[tuple[str, str, int]]) -> tuple[np.ndarray,
                                                                    dict[str, np.ndarray]]:
    """Private copies of a slot's parts (the slot is reused once acknowledged); the frame
    bytes get the BATCH_PAD zero bytes the decoder may read past the last frame."""
    start = 0
    cols: dict[str, np.ndarray] = {}
    data = np.empty(0, dtype=np.uint8)
    for name, dtype, end in layout:
        part = np.ndarray((end - start,), dtype=np.uint8, buffer=buf, offset=start)
        if name == "data":
            data = np.zeros(len(part) + BATCH_PAD, dtype=np.uint8)
            data[:len(part)] = part
        else:
            cols[name] = part.copy().view(dtype)
        start = (end + 7) & ~7
    return data, cols


# -- the worker ----------------------------------------------------------------------------

def _worker_main(index: int, cfg: Config, stages: list[Stage], conn: Connection,
                 shms: list[SharedMemory], eve_path: str | None, flow_seed: int) -> None:
    """Run the Pipeline on this worker's share of every batch until told to end."""
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # the parent stops the replay, between batches
    try:
        sink = EveFileSink(eve_path, cfg.outputs.eve.max_pending_bytes) if eve_path else None
        pipe = Pipeline(cfg, sink, stages, flow_seed=flow_seed)
        pipe.types.discard("stats")  # the parent writes the one stats event, of all workers
        while True:
            msg = conn.recv()
            if msg[0] == "end":
                break
            _, seq, slot, layout, now_us, inline = msg
            buf = inline if inline is not None else shms[slot].buf
            data, cols = _unpack(buf, layout)
            conn.send(("ack", seq))
            sel = np.flatnonzero(cols["who"] == index)
            if len(sel):
                pipe.process(PacketBatch(
                    data=data, offset=cols["offset"][sel], caplen=cols["caplen"][sel],
                    wirelen=cols["wirelen"][sel], ts_us=cols["ts_us"][sel],
                    linktype=cols["linktype"][sel], first_cnt=int(cols["cnt"][sel[0]]),
                    iface=cols["iface"][sel] if "iface" in cols else None,
                    cnt=cols["cnt"][sel]))
            pipe.tick(now_us)
        pipe.finish()
        if sink is not None:
            sink.close()
        conn.send(("done", pipe.all_counters(), dict(pipe.events), dict(pipe.alerts_by_sig)))
    except Exception as exc:  # noqa: BLE001 - reported by the parent as one line
        with contextlib.suppress(OSError):
            conn.send(("error", f"replay worker {index}: {type(exc).__name__}: {exc}"))
    finally:
        for shm in shms:
            shm.close()


# -- the parent ----------------------------------------------------------------------------

class _Totals:
    """The workers' results, shaped as cli._summary reads a Pipeline."""

    def __init__(self) -> None:
        self.per_worker: dict[int, dict[str, int]] = {}
        self.events: Counter[str] = Counter()
        self.alerts_by_sig: Counter[str] = Counter()

    def all_counters(self) -> dict[str, int]:
        from .daemon import aggregate  # the live daemon's sum of its workers' counters

        out = aggregate(self.per_worker)
        return {k: v for k, v in out.items() if not k.startswith("capture.")}


class _Workers:
    """The worker processes, their pipes and the shared-memory slots."""

    def __init__(self, n: int, cfg: Config, stages: list[Stage], eve_path: str | None):
        ctx = multiprocessing.get_context("fork")  # stages (compiled rules) are inherited
        self.flow_seed = int.from_bytes(os.urandom(8), "little")
        self.shms = [SharedMemory(create=True, size=SLOT_BYTES) for _ in range(SLOTS)]
        self.slot_views = [np.ndarray((SLOT_BYTES,), dtype=np.uint8, buffer=s.buf)
                           for s in self.shms]
        self.tmp_paths = [f"{eve_path}.worker{i}.{os.getpid()}.tmp" if eve_path else None
                          for i in range(n)]
        self.conns: list[Connection] = []
        self.procs: list[Any] = []
        self.acked = [-1] * n
        self.totals = _Totals()
        for i in range(n):
            mine, theirs = ctx.Pipe(duplex=True)
            p = ctx.Process(target=_worker_main, name=f"netsensor-replay-{i}", daemon=True,
                            args=(i, cfg, stages, theirs, self.shms, self.tmp_paths[i],
                                  self.flow_seed))
            p.start()
            theirs.close()
            self.conns.append(mine)
            self.procs.append(p)

    def _recv(self, i: int) -> tuple:
        try:
            msg = self.conns[i].recv()
        except (EOFError, OSError):
            self.procs[i].join(1.0)
            code = self.procs[i].exitcode
            why = f"killed by signal {-code}" if code is not None and code < 0 \
                else f"exit status {code}"
            raise WorkerFailed(f"replay worker {i} ended unexpectedly ({why})") from None
        if msg[0] == "error":
            raise WorkerFailed(msg[1])
        return msg

    def _wait_acks(self, seq: int) -> None:
        for i in range(len(self.conns)):
            while self.acked[i] < seq:
                msg = self._recv(i)
                self.acked[i] = msg[1]

    def send(self, seq: int, group: list[PacketBatch]) -> None:
        """Put a group of batches in the next free slot and tell every worker; never waits on
        a worker still busy with an earlier group, unless all SLOTS are in flight."""
        n = len(self.conns)
        parts, offsets, base = [], [], 0
        for b in group:
            lo = int(b.offset.min())
            hi = int((b.offset + b.caplen).max())
            parts.append(b.data[lo:hi])
            offsets.append(b.offset - (lo - base))
            base += hi - lo

        def cat(name: str) -> np.ndarray:
            return np.concatenate([getattr(b, name) for b in group])

        cols = {"offset": np.concatenate(offsets), "caplen": cat("caplen"),
                "wirelen": cat("wirelen"), "ts_us": cat("ts_us"), "linktype": cat("linktype"),
                "cnt": np.concatenate([b.cnt_at(np.arange(len(b))) for b in group]),
                "who": np.concatenate([assign_workers(b, n) for b in group]).astype(np.uint8)}
        if all(b.iface is not None for b in group):
            cols["iface"] = cat("iface")
        layout = _layout(base, cols)
        slot = seq % SLOTS
        self._wait_acks(seq - SLOTS)  # every worker has copied the slot's last group out
        inline = None
        if layout[-1][2] <= SLOT_BYTES:
            _pack(self.shms[slot].buf, layout, parts, cols)
        else:  # huge records: through the pipe
            inline = bytearray(layout[-1][2])
            _pack(inline, layout, parts, cols)
        msg = ("batch", seq, slot, layout, int(cols["ts_us"].max()), inline)
        for i in range(n):
            self._send(i, msg)

    def _send(self, i: int, msg: tuple) -> None:
        try:
            self.conns[i].send(msg)
        except OSError:
            self._recv(i)  # the worker's last word (its error), if it left one
            raise WorkerFailed(f"replay worker {i} ended unexpectedly") from None

    def finish(self) -> _Totals:
        """Tell every worker to end, and collect what each counted."""
        for i in range(len(self.conns)):
            self._send(i, ("end",))
        for i in range(len(self.conns)):
            while True:
                msg = self._recv(i)
                if msg[0] == "done":
                    break
            _, counters, events, alerts = msg
            self.totals.per_worker[i] = counters
            self.totals.events.update(events)
            self.totals.alerts_by_sig.update(alerts)
        for p in self.procs:
            p.join()
        return self.totals

    def merge_into(self, eve_path: str) -> None:
        """Append every worker's EVE file to eve.json."""
        with open(eve_path, "ab") as out:
            for path in self.tmp_paths:
                if path and os.path.exists(path):
                    with open(path, "rb") as f:
                        shutil.copyfileobj(f, out, 1 << 20)

    def close(self) -> None:
        for p in self.procs:
            if p.is_alive():  # only after an error or a second signal: workers ignore SIGTERM
                p.kill()
            p.join()
        for c in self.conns:
            c.close()
        for s in self.shms:
            s.close()
            with contextlib.suppress(FileNotFoundError):
                s.unlink()
        for path in self.tmp_paths:
            if path:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)


def replay_parallel(args: argparse.Namespace, cfg: Config, stages: list[Stage],
                    n_workers: int) -> int:
    """cli.cmd_replay with the packets spread over `n_workers` processes; same exit codes."""
    from .cli import (
        EXIT_INPUT,
        EXIT_USAGE,
        _close_sink,
        _end_replay,
        _err,
        _replay_progress,
        _ReplaySignals,
        _sources,
    )

    eve = cfg.outputs.eve
    eve_path = os.path.join(args.logdir, eve.filename) if eve.enabled else None
    sink = None
    try:
        if eve_path:  # opened (created) up front, so a bad log dir is found before reading
            sink = EveFileSink(eve_path, eve.max_pending_bytes)
    except SinkError as exc:
        _err(str(exc))
        return EXIT_USAGE
    progress = _replay_progress(args, cfg)
    errors: list[str] = []
    start = time.monotonic()
    packets = 0
    now_us = 0
    first_ts: int | None = None  # as Pipeline.first_ts: the first packet read
    signals = _ReplaySignals()
    workers = _Workers(n_workers, cfg, stages, eve_path)
    try:
        group: list[PacketBatch] = []
        group_bytes = 0
        seq = 0

        def dispatch() -> None:
            nonlocal seq, group, group_bytes
            if group:
                workers.send(seq, group)
                seq, group, group_bytes = seq + 1, [], 0

        batches: Iterator[PacketBatch] = _sources(args.files, cfg, errors, progress,
                                                  on_file=dispatch)
        for batch in batches:
            if not len(batch):
                continue
            # several read chunks of one file per dispatch: bigger batches cost the workers
            # less per packet
            group.append(batch)
            group_bytes += int(batch.offset[-1] - batch.offset[0]) + int(batch.caplen[-1])
            if group_bytes >= GROUP_BYTES or len(group) >= MAX_GROUP:
                dispatch()
            packets += len(batch)
            if first_ts is None:
                first_ts = int(batch.ts_us[0])
            now_us = max(now_us, int(batch.ts_us.max()))
            signals.hup = False  # eve.json is written at the end: nothing to reopen
            if signals.stop:
                break
        dispatch()
        totals = workers.finish()
        if eve_path and sink is not None:
            workers.merge_into(eve_path)
            if "stats" in eve.types and first_ts is not None:
                uptime = (now_us - first_ts) // 1_000_000
                sink.write([stats_event(now_us, uptime, totals.all_counters())])
                totals.events["stats"] += 1
    except (WorkerFailed, SinkError, OSError) as exc:
        progress.close()
        _err(str(exc))
        return EXIT_INPUT
    except KeyboardInterrupt:
        progress.close()
        _err("interrupted; the workers' events were not merged into eve.json")
        return EXIT_INPUT
    finally:
        signals.restore()
        workers.close()
        _close_sink(sink, errors)
    rc = _end_replay(args, progress, signals, errors, totals,  # type: ignore[arg-type]
                     packets, start)
    sys.stderr.flush()
    return rc
