"""sensor.config: defaults without a file, errors that name the dotted key, nested partial
overrides that keep the sibling defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from sensor.config import Config, ConfigError, load_config


def load(tmp_path: Path, text: str) -> Config:
    p = tmp_path / "netsensor.yaml"
    p.write_text(text)
    return load_config(str(p))


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(str(tmp_path / "netsensor.yaml") + ": ")
    return msg


def test_defaults_without_a_file() -> None:
    cfg = load_config(None)
    assert cfg == Config()
    assert cfg.flow.max_flows == 262144
    assert cfg.flow.timeouts.tcp.established == 600
    assert cfg.windows.seconds == 10.0 and cfg.windows.packets == 32
    assert cfg.outputs.eve.filename == "eve.json"
    assert cfg.replay.batch_size == 65536


def test_empty_file_is_defaults(tmp_path: Path) -> None:
    assert load(tmp_path, "") == Config()
    assert load(tmp_path, "# only a comment\n") == Config()


def test_nested_partial_override_keeps_sibling_defaults(tmp_path: Path) -> None:
    cfg = load(tmp_path, "flow:\n  timeouts:\n    tcp:\n      new: 5\n")
    tcp = cfg.flow.timeouts.tcp
    assert (tcp.new, tcp.established, tcp.closed) == (5, 600, 60)
    assert cfg.flow.timeouts.udp == Config().flow.timeouts.udp
    assert cfg.flow.max_flows == Config().flow.max_flows
    assert cfg.flow.emergency_timeouts.tcp.new == 5  # emergency defaults untouched


def test_override_several_levels(tmp_path: Path) -> None:
    cfg = load(tmp_path, """
flow:
  max_flows: 1000
  timeouts:
    udp: {established: 120}
windows:
  enabled: true
  seconds: 2.5
  packets: 16
outputs:
  eve:
    types: [flow]
""")
    assert cfg.flow.max_flows == 1000
    assert cfg.flow.timeouts.udp.established == 120 and cfg.flow.timeouts.udp.new == 30
    assert cfg.windows.enabled and cfg.windows.seconds == 2.5 and cfg.windows.bytes == 64
    assert cfg.outputs.eve.types == ("flow",)
    assert cfg.outputs.eve.community_id is True


def test_integer_is_accepted_for_float(tmp_path: Path) -> None:
    cfg = load(tmp_path, "windows:\n  seconds: 3\n")
    assert cfg.windows.seconds == 3.0 and isinstance(cfg.windows.seconds, float)


def test_dashes_in_keys_mean_underscores(tmp_path: Path) -> None:
    assert load(tmp_path, "flow:\n  max-flows: 77\n").flow.max_flows == 77


@pytest.mark.parametrize("text,key", [
    ("flwo:\n  max_flows: 1\n", "'flwo'"),
    ("flow:\n  max_flow: 1\n", "'flow.max_flow'"),
    ("flow:\n  timeouts:\n    tcp:\n      establised: 5\n", "'flow.timeouts.tcp.establised'"),
    ("outputs:\n  eve:\n    fielname: x.json\n", "'outputs.eve.fielname'"),
])
def test_unknown_key_names_the_dotted_key(tmp_path: Path, text: str, key: str) -> None:
    msg = error(tmp_path, text)
    assert f"unknown key {key}" in msg


@pytest.mark.parametrize("text,key,what", [
    ("flow:\n  max_flows: many\n", "flow.max_flows", "integer"),
    ("flow:\n  max_flows: 1.5\n", "flow.max_flows", "integer"),
    ("flow:\n  max_flows: true\n", "flow.max_flows", "integer"),
    ("flow:\n  timeouts:\n    tcp:\n      new: -1\n", "flow.timeouts.tcp.new", "negative"),
    ("windows:\n  enabled: 1\n", "windows.enabled", "true or false"),
    ("windows:\n  seconds: soon\n", "windows.seconds", "number"),
    ("outputs:\n  eve:\n    filename: 3\n", "outputs.eve.filename", "string"),
    ("outputs:\n  eve:\n    types: flow\n", "outputs.eve.types", "list of strings"),
    ("flow:\n  timeouts: 5\n", "flow.timeouts", "mapping"),
    ("flow: [1, 2]\n", "flow", "mapping"),
    ("live:\n  workers: [1, 2]\n", "live.workers", "int or str"),
])
def test_ill_typed_value_names_the_dotted_key(tmp_path: Path, text: str, key: str,
                                              what: str) -> None:
    msg = error(tmp_path, text)
    assert f"'{key}'" in msg and what in msg


def test_union_accepts_each_member(tmp_path: Path) -> None:
    assert load(tmp_path, "live:\n  workers: 4\n").live.workers == 4
    assert load(tmp_path, "live:\n  workers: auto\n").live.workers == "auto"


@pytest.mark.parametrize("text,key", [
    ("flow:\n  max_flows: 0\n", "flow.max_flows"),
    ("replay:\n  batch_size: 0\n", "replay.batch_size"),
    ("windows:\n  packets: 0\n", "windows.packets"),
    ("windows:\n  seconds: 0\n", "windows.seconds"),
])
def test_zero_where_it_cannot_work_is_an_error(tmp_path: Path, text: str, key: str) -> None:
    """These used to end replay in a traceback deep in the flow table or the reader."""
    assert f"'{key}' must be" in error(tmp_path, text)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert "must be a mapping" in error(tmp_path, "- a\n- b\n")


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    msg = error(tmp_path, "flow:\n  max_flows: 1\n bad: [\n")
    assert "line " in msg


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "nope.yaml"))
    assert "nope.yaml" in str(info.value) and "cannot read config" in str(info.value)


def test_config_is_frozen() -> None:
    cfg = Config()
    with pytest.raises(AttributeError):
        cfg.flow.max_flows = 5  # type: ignore[misc]
