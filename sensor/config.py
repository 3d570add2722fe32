"""YAML configuration as frozen dataclasses, with built-in defaults.

Every key has a default, so no file is needed. A file overrides what it names; an unknown
key or a value of the wrong type is an error that names the dotted key, because a typo in
a sensor's config must not silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml


class ConfigError(Exception):
    """A configuration problem, phrased for the operator."""


@dataclass(frozen=True)
class StateTimeouts:
    new: int = 30
    established: int = 300
    closed: int = 0


@dataclass(frozen=True)
class Timeouts:
    """Seconds of packet time without traffic before a flow ends (suricata.yaml defaults)."""

    default: StateTimeouts = StateTimeouts(30, 300, 0)
    tcp: StateTimeouts = StateTimeouts(60, 600, 60)
    udp: StateTimeouts = StateTimeouts(30, 300, 0)
    icmp: StateTimeouts = StateTimeouts(30, 300, 0)


EMERGENCY_TIMEOUTS = Timeouts(
    default=StateTimeouts(10, 100, 0), tcp=StateTimeouts(5, 100, 10),
    udp=StateTimeouts(10, 100, 0), icmp=StateTimeouts(10, 100, 0),
)


@dataclass(frozen=True)
class FlowConfig:
    # Hard cap on live flows; at the cap the table switches to the emergency timeouts and
    # then evicts the least recently seen flows (logged with reason "forced").
    max_flows: int = 262144
    timeouts: Timeouts = Timeouts()
    emergency_timeouts: Timeouts = EMERGENCY_TIMEOUTS


@dataclass(frozen=True)
class DefragLimits:
    """IP reassembly bounds, so a fragment flood cannot grow memory (sensor.defrag)."""

    max_trackers: int = 65536  # datagrams being reassembled at once
    max_fragments: int = 256  # fragments kept per datagram
    max_bytes: int = 33554432  # payload bytes held by all trackers (Suricata's memcap)
    timeout: int = 60  # seconds of packet time a datagram may take to complete


@dataclass(frozen=True)
class WindowConfig:
    """Per-flow windows for the model: close after `seconds`, `packets`, or at flow end."""

    enabled: bool = False
    seconds: float = 10.0
    packets: int = 32
    bytes: int = 64
    max_pending: int = 65536


@dataclass(frozen=True)
class ModelConfig:
    """The CNN-LSTM window scorer (sensor.detect.model); windows come from `windows`."""

    enabled: bool = False
    path: str = ""  # ONNX file; "" = the shipped models/netsensor-cnnlstm.onnx
    threads: int = 1  # onnxruntime intra-op threads
    aggregate_seconds: float = 60.0  # one alert per (source, class) per this many seconds
    # ... unless the (source, class) went quiet this long (no window over threshold): then
    # its next windows are a new episode and alert again (0 = off)
    aggregate_quiet_seconds: float = 5.0
    # windows over threshold from one (source, class) within a period before its first alert
    # (3: benign traffic unlike the lab's drew alerts from 2 windows; docs/model.md)
    min_windows: int = 3
    batch_size: int = 512  # most windows per onnxruntime call (sorted by length)
    # site baselines (`netsensor learn` ONNX files) scored on the same windows
    baselines: tuple[str, ...] = ()
    explain: bool = True  # occlusion explanation in each model alert's metadata


@dataclass(frozen=True)
class EveConfig:
    enabled: bool = True
    filename: str = "eve.json"
    # event types written; "flow", "stats" and "alert" are produced by netsensor
    types: tuple[str, ...] = ("alert", "flow", "stats")
    community_id: bool = True
    community_id_seed: int = 0
    # bytes of events held in memory while the file cannot be written (disk full); more
    # are dropped and counted (capture.output.file.dropped)
    max_pending_bytes: int = 67108864


@dataclass(frozen=True)
class StatsConfig:
    # seconds of packet time (replay) or wall time (live) between stats events; 0: only at end
    interval: int = 60


@dataclass(frozen=True)
class UnixSocketOutput:
    """EVE to a unix socket a consumer listens on (the daemon connects, as Suricata does)."""

    enabled: bool = False
    path: str = ""
    queue: int = 65536  # lines held while the consumer is slow or away; more are dropped


@dataclass(frozen=True)
class SyslogOutput:
    enabled: bool = False
    address: str = "/dev/log"  # a unix datagram socket path, or udp://HOST:PORT
    format: str = "rfc3164"  # what /dev/log listeners parse; rfc5424 for network receivers
    facility: str = "local5"
    level: str = "info"
    ident: str = "netsensor"
    queue: int = 65536


@dataclass(frozen=True)
class RedisOutput:
    enabled: bool = False
    server: str = "127.0.0.1"
    port: int = 6379
    mode: str = "list"  # list (LPUSH), lpush, rpush, channel (PUBLISH), publish
    key: str = "netsensor"
    password: str = ""
    db: int = 0
    queue: int = 65536


@dataclass(frozen=True)
class OutputsConfig:
    eve: EveConfig = EveConfig()
    stats: StatsConfig = StatsConfig()
    unix_stream: UnixSocketOutput = UnixSocketOutput()
    unix_dgram: UnixSocketOutput = UnixSocketOutput()
    syslog: SyslogOutput = SyslogOutput()
    redis: RedisOutput = RedisOutput()


@dataclass(frozen=True)
class LiveConfig:
    """`netsensor run`: AF_PACKET capture settings (see sensor.capture.live)."""

    workers: int | str = "auto"  # processes sharing the interface through PACKET_FANOUT
    promisc: bool = True
    bpf: str = ""
    snaplen: int = 65535
    rcvbuf: int = 33554432  # per worker socket receive buffer, bytes
    batch_packets: int = 1024
    batch_ms: float = 100.0
    fanout_group: int = 0  # 0: derived from the process id
    control_socket: str = ""  # default $RUNTIME_DIRECTORY/ctl.sock or /run/netsensor/ctl.sock
    user: str = ""  # started as root: run as this user once capturing ("": netsensor or nobody)


@dataclass(frozen=True)
class ReplayConfig:
    batch_size: int = 65536
    progress: bool = True
    # format and write EVE in a second process (sensor.output.eve_worker): the same output,
    # ~30% less CPU in the replay process, worth it where a core is free (docs/performance.md)
    eve_process: bool = False
    # worker processes for replay, or "auto" (one per core): sensor.replay_parallel,
    # docs/performance.md "Parallel replay" for when it pays off
    workers: int | str = 1
    # cut windows and score them in a second process (sensor.detect.model_process): the
    # same events, flow events written up to two batches later; auto: where this process
    # may use 2 cores or more (3 with eve_process). Not with ml.* rules or workers > 1
    # (they stay in-process)
    model_process: bool | str = "auto"


@dataclass(frozen=True)
class RulesConfig:
    files: tuple[str, ...] = ()
    classification_file: str = ""
    threshold_file: str = ""
    # Suricata's stream.midstream and stream.midstream-policy (see docs/rules.md)
    midstream: bool = False
    midstream_policy: str = "ignore"  # ignore, auto, pass-flow, bypass, drop-flow, ...
    async_oneside: bool = False  # Suricata's stream.async-oneside
    # false: payload rules see each TCP segment alone, never reassembled stream data
    stream_inspection: bool = True
    packet_alert_max: int = 15  # Suricata's packet-alert-max


@dataclass(frozen=True)
class VarsConfig:
    address_groups: dict[str, str] = field(default_factory=dict)
    port_groups: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    flow: FlowConfig = FlowConfig()
    defrag: DefragLimits = DefragLimits()
    windows: WindowConfig = WindowConfig()
    model: ModelConfig = ModelConfig()
    outputs: OutputsConfig = OutputsConfig()
    replay: ReplayConfig = ReplayConfig()
    rules: RulesConfig = RulesConfig()
    vars: VarsConfig = VarsConfig()
    live: LiveConfig = LiveConfig()


def refuse_world_writable(path: str, what: str) -> str:
    """The message for a file any local user could have rewritten (config, rules)."""
    return (f"{path}: refusing a world-writable {what} file: any local user could change "
            f"what the sensor does (fix: chmod o-w {path})")


def load_config(path: str | None) -> Config:
    """Defaults, overridden by the YAML file at `path` when given."""
    if path is None:
        return Config()
    try:
        with open(path, encoding="utf-8") as f:
            if os.fstat(f.fileno()).st_mode & stat.S_IWOTH:
                raise ConfigError(refuse_world_writable(path, "config"))
            doc = yaml.safe_load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: offset {exc.start}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "somewhere"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: {where}: {problem}") from None
    if doc is None:
        return Config()
    cfg = build(Config, doc, path, "")
    _check_minimums(cfg, path)
    if cfg.replay.model_process not in (True, False, "auto"):
        raise ConfigError(f"{path}: 'replay.model_process' must be true, false or auto, not "
                          f"{cfg.replay.model_process!r}")
    return cfg


# Values that must be at least this much: 0 would stop replay with a traceback (an empty
# flow table, batches of no packets) instead of meaning "off"
MINIMUMS: dict[str, float] = {
    "flow.max_flows": 1, "replay.batch_size": 1, "windows.seconds": 1e-6,
    "windows.packets": 1, "windows.bytes": 1, "windows.max_pending": 1,
}


def _check_minimums(cfg: Config, path: str) -> None:
    for dotted, least in MINIMUMS.items():
        value: Any = cfg
        for part in dotted.split("."):
            value = getattr(value, part)
        if value < least:
            what = "positive" if least < 1 else f"at least {least}"
            raise ConfigError(f"{path}: '{dotted}' must be {what}, not {value!r}")


def build(cls: type, doc: Any, path: str, prefix: str, base: Any = None) -> Any:
    """Build dataclass `cls` from a YAML mapping, checking every key and type.

    Keys the mapping leaves out keep `base`'s values (the parent's default), so
    `flow.timeouts.tcp.new: 5` keeps the TCP defaults for the other TCP states.
    """
    if base is None:
        base = cls()
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: '{prefix.rstrip('.') or '(top)'}' must be a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in doc.items():
        name = str(key).replace("-", "_")
        dotted = f"{prefix}{key}"
        if not dotted.isprintable():  # keep every message on one line
            dotted = dotted.encode("unicode_escape").decode("ascii")
        if name not in names:
            raise ConfigError(f"{path}: unknown key '{dotted}'")
        values[name] = _convert(hints[name], value, path, dotted, getattr(base, name))
    return dataclasses.replace(base, **values)


def _convert(tp: Any, value: Any, path: str, key: str, default: Any = None) -> Any:
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path, key + ".", default)
    origin = typing.get_origin(tp)
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{path}: '{key}' must be a list of strings")
        return tuple(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: '{key}' must be a mapping")
        return {str(k): str(v) for k, v in value.items()}
    if origin in (types.UnionType, typing.Union):
        # the first member type that takes the value (`workers: 4` or `workers: auto`)
        members = typing.get_args(tp)
        for member in members:
            try:
                return _convert(member, value, path, key, default)
            except ConfigError:
                continue
        names = " or ".join(getattr(m, "__name__", str(m)) for m in members)
        raise ConfigError(f"{path}: '{key}' must be {names}, not {value!r}")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: '{key}' must be true or false, not {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: '{key}' must be an integer, not {value!r}")
        if value < 0:
            raise ConfigError(f"{path}: '{key}' must not be negative")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path}: '{key}' must be a number, not {value!r}")
        if value < 0:
            raise ConfigError(f"{path}: '{key}' must not be negative")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: '{key}' must be a string, not {value!r}")
        return value
    raise ConfigError(f"{path}: '{key}' has an unsupported type")  # pragma: no cover
