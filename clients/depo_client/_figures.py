"""`StepFigures`: the service's per-step figures, as a flat dict for the trainer's own logger.

The adapters log it beside the loss curves (TRL's `log_metric`, verl's tracking metrics), so the
figures reach W&B / TensorBoard without a second dashboard. Per step:

* `depo/expected_informative`, `depo/survival_rate`, `depo/epoch`: the served batch's `stats`;
  `depo/local_batch` is 1.0 when the batch was drawn locally (service unreachable), then no stats.
* `depo/groups_reported`, `depo/zero_variance_share`: the groups reported this step and the share
  of them whose rewards are all equal (the service's own definition of zero variance).
* every `refresh_every` steps (carried in between), from the run: `depo/predictor_version`,
  `depo/run_zero_variance_share`, `depo/uniform_zero_variance_share` (the run's estimates applied to
  a seeded uniform sample of the pool, as the admin page does) and `depo/rollouts_saved_vs_uniform`
  (informative groups x rollouts a uniform pick spends per informative group, minus rollouts spent).

The refresh uses one no-retry, short-timeout client: a slow or absent service costs one timeout
per refresh, never a training stall, and only drops those figures.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence

from depo_client._exceptions import DepoError
from depo_client._fallback import Curriculum
from depo_client._retry import RetryPolicy

log = logging.getLogger("depo_client")

__all__ = ["StepFigures", "zero_variance_share"]


def zero_variance_share(groups: Iterable[Sequence[float]]) -> float | None:
    """The share of groups whose rewards are all equal; None for no groups."""
    flags = [all(r == g[0] for r in g) for g in groups if len(g)]
    return sum(flags) / len(flags) if flags else None


class StepFigures:
    """Builds each step's `depo/...` figures from a `Curriculum` and the groups just reported."""

    def __init__(
        self,
        curriculum: Curriculum,
        *,
        prefix: str = "depo/",
        refresh_every: int = 10,
        pool_sample: int = 1000,
        timeout: float = 5.0,
    ) -> None:
        self.curriculum = curriculum
        self.prefix = prefix
        self.refresh_every = max(1, refresh_every)
        self._client = curriculum.client.with_options(retry=RetryPolicy.none(), timeout=timeout)
        pool = [pid for pid, _ in curriculum._pool]
        rng = random.Random(f"depo-figures:{curriculum.run}")
        self._sample = rng.sample(pool, min(pool_sample, len(pool)))
        self._calls = 0
        self._run_figures: dict[str, float] = {}

    def __call__(
        self, served_step: int | None, groups: Sequence[Sequence[float]]
    ) -> dict[str, float]:
        """The figures for a training step that trained `groups`, served at `served_step`."""
        out: dict[str, float] = {}
        if served_step is not None:
            stats = self.curriculum.batch_stats(served_step)
            out["local_batch"] = 0.0 if stats is not None else 1.0
            if stats is not None:
                out["survival_rate"] = stats.survival_rate
                out["epoch"] = float(stats.epoch)
                if stats.expected_informative is not None:
                    out["expected_informative"] = stats.expected_informative
        out["groups_reported"] = float(len(groups))
        zv = zero_variance_share(groups)
        if zv is not None:
            out["zero_variance_share"] = zv
        if self._calls % self.refresh_every == 0 and not self.curriculum.degraded:
            self._refresh()
        self._calls += 1
        out.update(self._run_figures)
        return {self.prefix + k: float(v) for k, v in out.items()}

    def _refresh(self) -> None:
        run = self.curriculum.run
        figures: dict[str, float] = {}
        try:
            info = self._client.get_run(run)
            version = self._client.predictor(run).version
            if version is not None:
                figures["predictor_version"] = float(version)
            if info.zero_variance_share is not None:
                figures["run_zero_variance_share"] = info.zero_variance_share
            if self._sample:
                preds = self._client.predict(run, prompt_ids=self._sample).items
                zv_uniform = 1.0 - sum(p.p_informative for p in preds) / len(preds)
                figures["uniform_zero_variance_share"] = zv_uniform
                informative = info.outcomes * (1.0 - (info.zero_variance_share or 0.0))
                if informative and zv_uniform < 1.0:
                    per_informative = info.group_size / (1.0 - zv_uniform)
                    figures["rollouts_saved_vs_uniform"] = (
                        informative * per_informative - info.rollouts
                    )
        except DepoError as exc:  # figures are optional: keep the last ones, never stop training
            log.debug("depo: run figures not refreshed: %s", exc)
            return
        self._run_figures = figures
