"""When a run's next fit is due: its own `refit_every`, else a cadence derived from its steps."""

from __future__ import annotations

from service.models import Run
from service.policy import SelectionConfig

REFIT_STEPS = 2  # steps' worth of groups between fits, when the run sets no `refit_every`
REFIT_MIN = 256  # groups: small batches would refit every few seconds of a fast loop
REFIT_MAX = 1000  # groups: large batches refit at least this often


def refit_groups(cfg: SelectionConfig, run: Run) -> int:
    """New groups between fits: two steps' worth of the run's groups so far, in [256, 1,000].

    Between fits a re-served prompt's estimate does not follow the training it gets at every
    step; the lag is the number of steps between fits, not of groups. In `math-topics` at
    0.4 N (batch 128), refitting every 256 groups instead of 1,000 served 19.8% zero-variance
    groups against 22.1% (docs/selection.md#defaults-and-why).
    """
    if cfg.refit_every is not None:
        return cfg.refit_every
    steps = max(run.max_step, 0) + 1
    per_step = run.groups / steps
    return int(min(REFIT_MAX, max(REFIT_MIN, round(REFIT_STEPS * per_step))))


def next_fit_at(cfg: SelectionConfig, run: Run, trained_on: int | None) -> int:
    """The run's outcome count at which its next fit is due (`trained_on` None: no fit yet)."""
    if trained_on is None:
        return cfg.fit_min_outcomes
    return trained_on + refit_groups(cfg, run)
