"""text_bound's `--knows own+global`: told no transfer, it must match the law where there is none."""

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
