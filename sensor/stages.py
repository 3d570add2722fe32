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
    ml_classes: tuple[str, ...] | None = None
    # the model stage runs first: windows closed in a batch (or at a flow's end) are scored
    # before the rules look at that batch (or flow end), so ml.class / ml.score rules see
    # the verdict from the batch its window closed in (docs/rules.md)
    if cfg.model.enabled:  # else do not even import the model code (replay start-up time)
        from .detect.model import ModelError, build_model_stage

        try:
            model = build_model_stage(cfg)
        except ModelError as exc:
            raise StageError(str(exc)) from None
        if model is not None:
            stages.append(model)
            ml_classes = model.classes
    if cfg.rules.files:
        from .detect.rules.engine import RuleLoadError, build_rule_stage

        try:
            rule_stage = build_rule_stage(cfg, strict=strict, ml_classes=ml_classes)
        except RuleLoadError as exc:
            raise StageError(str(exc)) from None
        if rule_stage is not None:
            stages.append(rule_stage)
    return stages

