"""text_bound's `--knows` variants: each must match the law exactly where what it leaves out is absent."""

from __future__ import annotations

import pytest

from benchmarks.scenarios import SCENARIOS, build
from benchmarks.selection_bound import noise_for
from benchmarks.text_bound import Result, run

pytestmark = pytest.mark.slow


def _pair(name: str) -> tuple[Result, Result]:
    setup = build(SCENARIOS[name], 0)
    tau = noise_for(0.5, setup.start[: setup.n_pool], draws=1)
    law = run(setup, 1_500, "noisy", tau, 0.3, "law")
    own = run(setup, 1_500, "noisy", tau, 0.3, "own+global")
    return law, own


def test_own_law_is_all_own_and_global() -> None:
    law, own = _pair("own")
    assert law == own


def test_neighbour_law_is_not() -> None:
    law, own = _pair("embed")
    assert law != own


@pytest.mark.parametrize(("name", "same"), [("embed", True), ("hetero", False)])
def test_mean_learnability_is_the_law_only_without_spread(name: str, same: bool) -> None:
    """`--knows mean` must equal the law where every prompt learns alike, and not in `hetero`."""
    setup = build(SCENARIOS[name], 0)
    tau = noise_for(0.5, setup.start[: setup.n_pool], draws=1)
    law = run(setup, 1_500, "noisy", tau, 0.3, "law")
    mean = run(setup, 1_500, "noisy", tau, 0.3, "mean")
    assert (law == mean) is same
