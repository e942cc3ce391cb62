"""Contracts of each strategy, on the pure functions and through the API."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest

from service.estimator.beta import p_mixed
from service.policy import SelectionConfig
from service.selection import strategies as st
from service.selection.budget import allocate
from tests.fixtures.api import make_dataset, make_run


def _cands(means: list[float], strength: float = 50.0, seen: bool = True) -> st.Candidates:
    m = np.array(means)
    return st.Candidates(
        idx=np.arange(len(m), dtype=np.int64),
        alpha=m * strength + 1e-3,
        beta=(1 - m) * strength + 1e-3,
        seen=np.full(len(m), seen),
    )


def test_window_keeps_only_inside_bounds() -> None:
    cfg = SelectionConfig(window_lo=0.2, window_hi=0.7)
    cands = _cands([0.05, 0.3, 0.9, 0.5, 0.71, 0.2, 0.99])
    keep = st.get("window").choose(cands, 10, cfg, np.random.default_rng(0), 8)
    assert sorted(cands.mean[keep].round(2).tolist()) == [0.2, 0.3, 0.5]


def test_informative_prefers_mixed_groups_and_explores_rejects() -> None:
    rng = np.random.default_rng(0)
    means = [0.01] * 40 + [0.99] * 40 + [0.5] * 15
    cands = _cands(means, strength=200)
    cfg = SelectionConfig(explore=0.25)
    keep = st.get("informative").choose(cands, 20, cfg, rng, 8)
    assert len(keep) == len(set(keep.tolist())) == 20
    mid = int((np.abs(cands.mean[keep] - 0.5) < 0.1).sum())
    assert mid == 15, "the exploit share is the 15 mixed prompts"
    assert 20 - mid == round(0.25 * 20), "the exploration share re-tests filtered prompts"


def test_informative_takes_unseen_prompts_in_the_mixed_classifiers_order() -> None:
    """Which new prompts: the classifier's best; how many against seen ones: as without it."""
    rng = np.random.default_rng(0)
    unseen = _cands(np.linspace(0.1, 0.6, 20).tolist(), strength=2, seen=False)
    mixed = np.linspace(0.1, 0.9, 20)
    seen = _cands([0.5] * 10 + [0.02] * 10, strength=4)
    cands = st.Candidates.concat(
        st.Candidates(unseen.idx, unseen.alpha, unseen.beta, unseen.seen, mixed=mixed),
        st.Candidates(seen.idx + 20, seen.alpha, seen.beta, seen.seen, mixed=np.full(20, 0.99)),
    )
    cfg = SelectionConfig(explore=0.0)
    keep = st.get("informative").choose(cands, 15, cfg, rng, 8)
    plain = st.Candidates(cands.idx, cands.alpha, cands.beta, cands.seen)
    before = st.get("informative").choose(plain, 15, cfg, np.random.default_rng(0), 8)
    new = sorted(i for i in keep.tolist() if i < 20)
    assert len(new) == sum(i < 20 for i in before.tolist()), "as many new prompts as without it"
    assert new == list(range(20 - len(new), 20)), "the classifier's likeliest-mixed ones"
    assert 0 < len(new) < 15


def test_target_is_thompson_sampled_around_target() -> None:
    cfg = SelectionConfig(target=0.3, explore=0.0)
    cands = _cands([0.1, 0.3, 0.31, 0.9, 0.6], strength=400)
    keep = st.get("target").choose(cands, 2, cfg, np.random.default_rng(1), 8)
    assert set(keep.tolist()) == {1, 2}
    # MoPPS keeps the `size` nearest: no explore share drawn from the rest
    explore = SelectionConfig(target=0.3, explore=0.5)
    keep = st.get("target").choose(cands, 2, explore, np.random.default_rng(1), 8)
    assert set(keep.tolist()) == {1, 2}
    wide = _cands([0.3] * 50, strength=2)  # Thompson draws differ when the posterior is wide
    picks = {
        tuple(sorted(st.get("target").choose(wide, 5, cfg, np.random.default_rng(s), 8)))
        for s in range(5)
    }
    assert len(picks) > 1


def test_mixed_probability_and_budget() -> None:
    assert p_mixed(np.array([1.0]), np.array([1.0]), np.array([8]))[0] == pytest.approx(1 - 2 / 9)
    a, b = np.array([10.0, 17.0, 2.0]), np.array([10.0, 3.0, 10.0])  # p near 0.5, 0.85, 0.17
    n = allocate(a, b, total=24, n_min=2, n_max=16)
    assert n.sum() == 24 and n.min() >= 2 and n.max() <= 16
    assert n[0] < n[1] and n[0] < n[2], "skewed prompts need more rollouts for a mixed group"
    assert p_mixed(a, b, n).sum() >= p_mixed(a, b, np.array([8, 8, 8])).sum()


async def test_warmup_accepts_all_then_filters(client: httpx.AsyncClient, uid: str) -> None:
    prompts = await make_dataset(client, f"ds-{uid}", 300)
    await make_run(
        client,
        f"run-{uid}",
        f"ds-{uid}",
        group_size=4,
        strategy="informative",
        selection={"warmup_outcomes": 40},
    )
    url = f"/v1/runs/run-{uid}"
    solved = {p["id"] for p in prompts[::2]}
    for step in range(3):
        b = (await client.post(f"{url}/batches", json={"step": step, "size": 20})).json()
        expected = "uniform" if step < 2 else "informative"
        assert b["stats"]["strategy"] == expected
        assert b["stats"]["scanned"] == (20 if step < 2 else 300), "then the whole free pool"
        results = [
            {"prompt_id": p["id"], "rewards": [1, 1, 1, 1] if p["id"] in solved else [1, 0, 1, 0]}
            for p in b["prompts"]
        ]
        await client.post(
            f"{url}/outcomes", json={"step": step, "batch_id": b["batch_id"], "results": results}
        )


async def test_exploration_through_api_retests_the_stalest(
    client: httpx.AsyncClient, uid: str
) -> None:
    prompts = await make_dataset(client, f"ds-{uid}", 20)
    await make_run(
        client,
        f"run-{uid}",
        f"ds-{uid}",
        strategy="informative",
        selection={"explore": 0.5, "oversample": 100, "fit_min_outcomes": 10_000},
    )
    url = f"/v1/runs/run-{uid}"

    def group(ps: list[dict[str, str]], rewards: list[int]) -> list[dict[str, object]]:
        return [{"prompt_id": p["id"], "rewards": rewards} for p in ps]

    stale, fresh, mixed = prompts[:5], prompts[5:10], prompts[10:]
    await client.post(f"{url}/outcomes", json={"step": 0, "results": group(stale, [0] * 8)})
    results = group(fresh, [0] * 8) + group(mixed, [1, 0] * 4)
    await client.post(f"{url}/outcomes", json={"step": 50, "results": results})
    b = (await client.post(f"{url}/batches", json={"step": 60, "size": 8})).json()
    served = {p["id"] for p in b["prompts"]}
    assert b["stats"]["scanned"] == 20
    assert len(served & {p["id"] for p in mixed}) == 4, "the exploit half is mixed prompts"
    assert served - {p["id"] for p in mixed} <= {p["id"] for p in stale}, "explore: stalest"


async def _window_run(
    client: httpx.AsyncClient,
    uid: str,
    n: int,
    pick_mixed: Callable[[list[str]], set[str]],
    **sel: Any,
) -> set[str]:
    """A `window` run whose prompts have one group each: mixed (4/8) or all failed; the mixed."""
    prompts = await make_dataset(client, f"ds-{uid}", n)
    sel = {"oversample": 1, **sel}
    await make_run(client, f"run-{uid}", f"ds-{uid}", strategy="window", selection=sel)
    mixed_ids = pick_mixed([p["id"] for p in prompts])
    results = [
        {"prompt_id": p["id"], "rewards": [1.0, 0.0] * 4 if p["id"] in mixed_ids else [0.0] * 8}
        for p in prompts
    ]
    await client.post(f"/v1/runs/run-{uid}/outcomes", json={"step": 0, "results": results})
    return mixed_ids


async def test_window_through_api_scans_until_full(client: httpx.AsyncClient, uid: str) -> None:
    mixed_ids = await _window_run(
        client, uid, 400, lambda ids: set(random.Random(0).sample(ids, 60))
    )
    b = (await client.post(f"/v1/runs/run-{uid}/batches", json={"step": 1, "size": 20})).json()
    assert {p["id"] for p in b["prompts"]} <= mixed_ids
    assert all(0.15 <= p["predicted_pass_rate"] <= 0.85 for p in b["prompts"])
    assert b["stats"]["scanned"] > 20 and b["stats"]["kept"] == 20 and b["stats"]["filled"] == 0


async def test_window_says_how_many_it_topped_up_when_the_scan_runs_out(
    client: httpx.AsyncClient, uid: str
) -> None:
    """Bounds hold for what the window picked; the rest is flagged in `filled`, not hidden."""
    mixed_ids = await _window_run(client, uid, 200, lambda ids: set(ids[:30]), max_scan=3)
    b = (await client.post(f"/v1/runs/run-{uid}/batches", json={"step": 1, "size": 20})).json()
    stats, served = b["stats"], b["prompts"]
    assert stats["scanned"] == 60 and len(served) == 20
    picked = served[: 20 - stats["filled"]]
    assert stats["filled"] > 0, "60 scanned hold about 9 of the 30 mixed prompts"
    assert all(0.15 <= p["predicted_pass_rate"] <= 0.85 for p in picked)
    assert {p["id"] for p in picked} <= mixed_ids
    assert not any(0.15 <= p["predicted_pass_rate"] <= 0.85 for p in served[len(picked) :])


async def test_budget_suggests_n_that_sums_to_size_times_g(
    client: httpx.AsyncClient, uid: str
) -> None:
    prompts = await make_dataset(client, f"ds-{uid}", 100)
    await make_run(
        client,
        f"run-{uid}",
        f"ds-{uid}",
        group_size=8,
        strategy="uniform",
        selection={"budget": True},
    )
    results = [
        {"prompt_id": p["id"], "rewards": [1.0] * 7 + [0.0] if i % 2 else [1.0, 0.0] * 4}
        for i, p in enumerate(prompts)
    ]
    await client.post(f"/v1/runs/run-{uid}/outcomes", json={"step": 0, "results": results})
    b = (await client.post(f"/v1/runs/run-{uid}/batches", json={"step": 1, "size": 16})).json()
    ns = [p["n"] for p in b["prompts"]]
    assert sum(ns) == 16 * 8 and min(ns) >= 2 and max(ns) <= 16
    skewed = [p["n"] for p in b["prompts"] if p["predicted_pass_rate"] > 0.7]
    even = [p["n"] for p in b["prompts"] if p["predicted_pass_rate"] < 0.6]
    assert skewed and even and min(skewed) > max(even)
    again = (await client.post(f"/v1/runs/run-{uid}/batches", json={"step": 1, "size": 16})).json()
    assert [p["n"] for p in again["prompts"]] == ns


def test_informative_explores_the_stalest_rejects_first() -> None:
    means = [0.01] * 30 + [0.5] * 10
    cands = st.Candidates(
        idx=np.arange(40, dtype=np.int64),
        alpha=np.array(means) * 200 + 1e-3,
        beta=(1 - np.array(means)) * 200 + 1e-3,
        seen=np.ones(40, dtype=bool),
        age=np.array([float(i) for i in range(30)] + [1.0] * 10),
    )
    keep = st.get("informative").choose(
        cands, 14, SelectionConfig(explore=4 / 14), np.random.default_rng(0), 8
    )
    explored = sorted(set(keep.tolist()) - set(range(30, 40)))
    assert explored == [26, 27, 28, 29], "the rejects unseen for longest are re-tested"


def test_selection_floors_the_prior_strength_but_predict_does_not() -> None:
    from service.estimator.prior import Prior, prior_pseudo_counts

    prior = Prior(version=1, rates=np.array([0.2, 0.6], dtype=np.float32), drift=0.0, strength=0.5)
    idx = np.arange(2, dtype=np.int64)
    cfg = SelectionConfig(min_prior_strength=4.0)
    a, b = prior_pseudo_counts(cfg, prior, idx)
    assert (a + b) == pytest.approx([0.5, 0.5]), "the estimate keeps the calibrated strength"
    a, b = prior_pseudo_counts(cfg, prior, idx, selecting=True)
    assert (a + b) == pytest.approx([4.0, 4.0])
    assert a / (a + b) == pytest.approx([0.2, 0.6]), "the floor keeps the predicted mean"
    fixed = SelectionConfig(prior_strength=1.0, min_prior_strength=4.0)
    a, b = prior_pseudo_counts(fixed, prior, idx, selecting=True)
    assert (a + b) == pytest.approx([1.0, 1.0]), "a run's fixed strength wins"


def test_scored_scan_covers_the_free_pool_up_to_the_cap() -> None:
    from service.selection.adaptive import MIN_PER_SLOT, SCAN_CAP, scored_scan

    assert scored_scan(4000, 128) == 4000, "a pool under the cap is re-ranked whole"
    assert scored_scan(1_000_000, 128) == SCAN_CAP, "a large pool: the cap"
    assert scored_scan(1_000_000, 4096) == MIN_PER_SLOT * 4096, "never under 4 per slot"
    assert scored_scan(300, 128) == 300, "never more than is free"


async def test_unset_scan_width_follows_the_pool(client: httpx.AsyncClient, uid: str) -> None:
    """With no `selection`, informative re-ranks every free prompt; window keeps 4 per slot."""
    for n in (120, 700):
        await make_dataset(client, f"ds-{uid}-{n}", n)
        for strategy in ("informative", "window"):
            run = f"run-{uid}-{n}-{strategy}"
            body = await make_run(client, run, f"ds-{uid}-{n}", strategy=strategy)
            assert body["selection"]["oversample"] is None
            b = await client.post(f"/v1/runs/{run}/batches", json={"step": 0, "size": 10})
            scanned = b.json()["stats"]["scanned"]
            assert scanned == (n if strategy == "informative" else 40), (strategy, n)
