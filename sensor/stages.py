"""The reloadable part of the pipeline: rule engine and model stages, built from config.

The daemon calls build_stages() at start and on every reload (SIGUSR2, `netsensor ctl
reload`). It must either return a complete, working set or raise StageError saying why:
the daemon swaps to the new set only when this returns, so a broken rule file or model
keeps the old set running. The rules and model engineers add their stages here.
"""

from __future__ import annotations

import importlib.util

from .config import Config
from .pipeline import Stage


class StageError(Exception):
    """The configured rules or model cannot be used; the message says which and why."""


def build_stages(cfg: Config) -> list[Stage]:
    """Every stage the config asks for, ready to run; raises StageError otherwise."""
    stages: list[Stage] = []
    if cfg.rules.files:
        _check_rules(cfg)
    from .detect.model import ModelError, build_model_stage

    try:
        model = build_model_stage(cfg)
    except ModelError as exc:
        raise StageError(str(exc)) from None
    if model is not None:
        stages.append(model)
    return stages


def _check_rules(cfg: Config) -> None:
    """Until a rule stage exists, a reload still refuses rule files the loader rejects."""
    if importlib.util.find_spec("sensor.detect.rules.loader") is None:
        return
    from .detect.rules.loader import load_rules

    vars_ = {"address-groups": dict(cfg.vars.address_groups),
             "port-groups": dict(cfg.vars.port_groups)}
    try:
        rs = load_rules(cfg.rules.files, vars_)
    except (ValueError, OSError) as exc:  # e.g. a bad variable definition
        raise StageError(f"rules: {exc}") from None
    problems = [*rs.file_errors, *(str(e) for e in rs.errors)]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise StageError(f"{len(problems)} rule problem(s): {problems[0]}{more}")
