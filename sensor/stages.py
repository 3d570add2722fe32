"""The reloadable part of the pipeline: rule engine and model stages, built from config.

The daemon calls build_stages() at start and on every reload (SIGUSR2, `netsensor ctl
reload`). It must either return a complete, working set or raise StageError saying why:
the daemon swaps to the new set only when this returns, so a broken rule file or model
keeps the old set running. The rules and model engineers add their stages here.
"""

from __future__ import annotations

from .config import Config
from .pipeline import Stage


class StageError(Exception):
    """The configured rules or model cannot be used; the message says which and why."""


def build_stages(cfg: Config, strict: bool = True) -> list[Stage]:
    """Every stage the config asks for, ready to run; raises StageError otherwise.

    `strict` (the daemon, at start and on reload): any rejected rule is an error, so a
    reload keeps the running set. Replay passes strict=False: rejected rules are reported
    on stderr, one line each, counted, and the other rules run.
    """
    stages: list[Stage] = []
    if cfg.rules.files:
        from .detect.rules.engine import RuleLoadError, build_rule_stage

        try:
            rule_stage = build_rule_stage(cfg, strict=strict)
        except RuleLoadError as exc:
            raise StageError(str(exc)) from None
        if rule_stage is not None:
            stages.append(rule_stage)
    if not cfg.model.enabled:  # do not even import the model code (replay start-up time)
        return stages
    from .detect.model import ModelError, build_model_stage

    try:
        model = build_model_stage(cfg)
    except ModelError as exc:
        raise StageError(str(exc)) from None
    if model is not None:
        stages.append(model)
    return stages

