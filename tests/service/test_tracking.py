"""Exposure tracking: the replay, the fitted gains, the shifts selection applies, end to end."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import numpy as np
import pytest
import scipy.sparse as sp
from sqlalchemy import func, select

from service.estimator import N_FEATURES, exposure
from service.estimator.exposure import Log, Replay
from service.models import PredictorVersion, Run
from service.predictor import tracking, versions
from service.state import AppState


def _brute_neighbours(x: np.ndarray, k: int) -> list[set[int]]:
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = u @ u.T
    np.fill_diagonal(sims, -np.inf)
    return [set(np.argsort(-row)[:k].tolist()) for row in sims]


@pytest.mark.parametrize("sparse", [False, True])
def test_neighbours_are_the_nearest_by_cosine(sparse: bool) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((300, 40)) * (rng.random((300, 40)) < 0.3)
    x[:, 0] += 0.01  # no all-zero row
    g = exposure.Graph.of(sp.csr_matrix(x) if sparse else x, 5)
    g.fill(np.array([3, 7, 7, 250]), chunk=2)  # only the rows asked for, each once
    assert set(np.flatnonzero(g.filled)) == {3, 7, 250}
    assert np.all(g.sim[~g.filled] == 0)  # rows not filled in pass nothing on
    g.fill(np.arange(300), chunk=64)
    assert [set(r.tolist()) for r in g.nb] == _brute_neighbours(x, 5)
    assert all(i not in g.nb[i] for i in range(300))
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert g.sim[7] == pytest.approx([u[7] @ u[j] for j in g.nb[7]], abs=1e-5)


def _pool_texts(n: int, seed: int = 0) -> list[str]:
    """Prompts in topics of shared words and numbers, so neighbours are neither ties nor noise."""
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(3_000)]
    topics = [rng.choice(len(vocab), 25, replace=False) for _ in range(n // 20 + 1)]
    out = []
    for _ in range(n):
        t = topics[rng.integers(len(topics))]
        words = [vocab[j] for j in rng.choice(t, 12)] + [
            vocab[j] for j in rng.integers(0, 3_000, 4)
        ]
        out.append(" ".join(words) + f" = {rng.integers(100)}")
    return out


def _recall(found: np.ndarray, exact_sim: np.ndarray, unit: Any) -> float:
    """Share of found neighbours at least as close as the k-th exact one (ties count)."""
    rows = np.arange(len(found))
    got = np.asarray(unit[np.repeat(rows, found.shape[1])].multiply(unit[found.ravel()]).sum(1))
    got = got.reshape(found.shape)
    return float(
        ((got >= exact_sim.min(axis=1, keepdims=True) - 1e-5) & (found != rows[:, None])).mean()
    )


def test_pruned_neighbours_find_the_exact_ones() -> None:
    from service.estimator.embedders import NgramsEmbedder

    x = NgramsEmbedder().embed(_pool_texts(3_000))
    x = sp.vstack([x, sp.csr_matrix((5, x.shape[1]), dtype=np.float32)]).tocsr()  # unembedded
    exact = exposure.Graph.of(x, 10)
    exact.fill(np.arange(3_000))
    g = exposure.Graph.pruned_of(x, 10)
    g.fill(np.arange(3_005))
    unit = exact.unit
    assert _recall(g.nb[:3_000], exact.sim[:3_000], unit) >= 0.9
    # the similarities are the pairs' own cosines, and an unembedded row passes nothing on
    i = 17
    assert g.sim[i] == pytest.approx([unit[i].multiply(unit[j]).sum() for j in g.nb[i]], abs=1e-3)
    assert (
        np.all(g.sim[3_000:] == 0)
        and not np.isin(g.nb[:3_000][g.sim[:3_000] > 0], range(3_000, 3_005)).any()
    )
    assert all(i not in g.nb[i] for i in range(3_000))


def test_tracking_has_neighbours_above_the_exact_limit() -> None:
    """Past the limit rows come from rare-column candidates; fails if they are not the nearest."""
    from service.estimator.embedders import NgramsEmbedder
    from service.estimator.inputs import DatasetInputs, model_inputs
    from service.predictor.cache import PredictorCache

    texts = _pool_texts(3_000, seed=1)
    x = model_inputs(NgramsEmbedder().embed(texts), texts)
    inputs = DatasetInputs(x, np.ones(len(texts), dtype=bool))
    cache = PredictorCache()
    g = tracking.graph(cache, 1, inputs, exact_max=1_000)
    assert g.pruned and not g.filled.any()  # nothing worked out before a fit asks
    rows = np.arange(0, len(texts), 7)
    g.fill(rows)
    exact = exposure.Graph.of(x[:, : x.shape[1] - N_FEATURES], tracking.NEIGHBOURS)
    exact.fill(rows)
    assert g.filled[rows].all() and not g.filled[rows + 1].any()
    # each found neighbour at least as close as the 10th exact one, for most of them
    cos = (exact.unit[rows] @ exact.unit_t).toarray()
    found = np.take_along_axis(cos, g.nb[rows], axis=1)
    kth = exact.sim[rows].min(axis=1, keepdims=True)
    assert (found >= kth - 1e-4).mean() >= 0.9
    assert all(int(r) not in g.nb[r] for r in rows)
    assert tracking.graph(cache, 1, inputs, exact_max=1_000) is g  # kept while its inputs are
    small = tracking.graph(PredictorCache(), 1, inputs)  # under the limit: exact, on demand
    assert not small.pruned and not small.filled.any()


def test_a_fit_works_out_at_most_its_limit_of_pruned_rows_newest_first() -> None:
    from service.estimator.embedders import NgramsEmbedder

    texts = _pool_texts(2_000, seed=3)
    g = exposure.Graph.pruned_of(NgramsEmbedder().embed(texts), 5)
    order = np.array([5, 9, 3, 9, 7, 1], dtype=np.int64)
    g.fill(order, limit=3)
    assert sorted(np.flatnonzero(g.filled).tolist()) == [1, 7, 9]
    g.fill(order, limit=3)  # the next fit takes the rest
    assert sorted(np.flatnonzero(g.filled).tolist()) == [1, 3, 5, 7, 9]


@pytest.mark.slow
def test_tracking_has_neighbours_past_30000_prompts() -> None:
    from service.estimator.embedders import NgramsEmbedder

    n = tracking.EXACT_MAX + 5_000
    x = NgramsEmbedder().embed(_pool_texts(n, seed=2))
    g = tracking.neighbour_graph(x)
    assert g.pruned and g.nb.shape == (n, tracking.NEIGHBOURS)
    rows = np.arange(0, n, 97)  # the exact nearest of a sample of rows
    g.fill(rows)
    exact = exposure.Graph.of(x, 1)
    exact.fill(rows)
    assert g.sim[rows, 0].mean() >= 0.97 * exact.sim[rows, 0].mean()


def _simulate(
    gains: tuple[float, float, float], steps: int = 60, size: int = 600, seed: int = 0
) -> tuple[Log, np.ndarray, np.ndarray, np.ndarray]:
    """A policy that moves by exactly this law; each step trains on 100 random prompts."""
    rng = np.random.default_rng(seed)
    x = rng.random((size, 30)) ** 4
    graph = exposure.Graph.of(x, 5)
    graph.fill(np.arange(size))
    nb, sim = graph.nb, graph.sim
    z = rng.normal(0.0, 1.5, size)
    z0 = z.copy()
    cols: list[list[Any]] = [[], [], [], [], []]
    for step in range(steps):
        batch = rng.choice(size, 100, replace=False)
        sds = []
        for i in batch:
            r = rng.random(8) < 1 / (1 + np.exp(-z[i]))
            sds.append(float(np.std(r)))
            for c, v in zip(cols, (i, step, 8, int(r.sum()), sds[-1]), strict=True):
                c.append(v)
        for i, s in zip(batch, sds, strict=True):  # the update after the step's rollouts
            z[i] += gains[0] * s
            z[nb[i]] += gains[1] * s * sim[i]
            z += gains[2] * s
    log = Log(*(np.array(c) for c in cols[:4]), np.array(cols[4], dtype=float))  # type: ignore[arg-type]
    return log, nb, sim, 1 / (1 + np.exp(-z0))


@pytest.mark.parametrize(
    ("law", "lo", "hi"),
    [
        ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0), (0.15, 0.3, 0.002)),
        ((0.8, 0.0, 0.0), (0.5, 0.0, 0.0), (1.2, 0.3, 0.002)),
        ((0.3, 0.6, 0.0), (0.05, 0.3, 0.0), (0.6, 1.0, 0.002)),
    ],
)
def test_gains_follow_the_law_the_policy_moved_by(
    law: tuple[float, float, float], lo: tuple[float, ...], hi: tuple[float, ...]
) -> None:
    """Fails if the fit ignores its data: no learning gives ~0, own or neighbours' shows."""
    log, nb, sim, p0 = _simulate(law)
    r = Replay.empty(len(p0))
    exposure.advance(r, log, nb, sim, 1.0, p0 * 8.0, (1 - p0) * 8.0)
    gains = exposure.fit_gains(r.rows)
    assert gains is not None
    assert np.all(gains >= np.array(lo)) and np.all(gains <= np.array(hi)), gains


def test_too_few_reserved_groups_fit_nothing() -> None:
    log, nb, sim, p0 = _simulate((0.5, 0.0, 0.0), steps=2)
    r = Replay.empty(len(p0))
    exposure.advance(r, log, nb, sim, 1.0, p0 * 8.0, (1 - p0) * 8.0)
    assert len(r.rows) < exposure.MIN_ROWS and exposure.fit_gains(r.rows) is None


def _cut(log: Log, a: int, b: int) -> Log:
    return log.cut(a, b)


def test_replaying_in_pieces_equals_one_pass_and_survives_storage() -> None:
    """Each fit continues the stored replay; a cut inside a step must not change anything."""
    log, nb, sim, p0 = _simulate((0.4, 0.2, 0.0), steps=12)
    whole = Replay.empty(len(p0))
    exposure.advance(whole, log, nb, sim, 0.99, p0 * 4.0, (1 - p0) * 4.0)
    part = Replay.empty(len(p0))
    for a, b in [(0, 250), (250, 777), (777, len(log.idx))]:  # 250 and 777 fall mid-step
        exposure.advance(part, _cut(log, a, b), nb, sim, 0.99, p0 * 4.0, (1 - p0) * 4.0)
        shifts = exposure.shifts(part, np.ones(3), nb, sim, 0.99)
        part = tracking.unpack_replay(tracking.pack(part))
        got = tracking.unpack_shifts(tracking.pack_shifts(shifts))
        assert got is not None and got.step == shifts.step
        np.testing.assert_array_equal(got.shift, shifts.shift)
    for name, value in whole.arrays().items():
        np.testing.assert_allclose(part.arrays()[name], value, err_msg=name)


def test_shifts_count_the_last_step_and_fade_with_newer_evidence() -> None:
    log, nb, sim, p0 = _simulate((0.5, 0.0, 0.0), steps=20)
    r = Replay.empty(len(p0))
    exposure.advance(r, log, nb, sim, 1.0, p0 * 4.0, (1 - p0) * 4.0)
    gains = np.array([0.5, 0.0, 0.0])
    s = exposure.shifts(r, gains, nb, sim, 1.0)
    last = log.idx[log.step == log.step.max()]
    mixed = last[log.sd[log.step == log.step.max()] > 0]
    # a prompt trained in the last step has moved by at least that group's gain since it
    assert np.all(s.shift[mixed] > 0)
    never = np.setdiff1d(np.arange(len(p0)), log.idx)
    assert np.all(s.shift[never] == 0)
    i = int(mixed[0])
    idx = np.array([i, int(never[0]), len(p0) + 5])
    evidence = np.array([float(s.weight[i]), 0.0, 3.0])
    full = exposure.shift_for(s, idx, evidence, s.step, 1.0)
    assert full[0] == pytest.approx(s.shift[i]) and full[1] == 0 and full[2] == 0
    # as much evidence again since the fit, gathered nearer the current policy: half the shift
    half = exposure.shift_for(s, idx, evidence * 2, s.step, 1.0)
    assert half[0] == pytest.approx(s.shift[i] / 2, rel=1e-5)


def test_a_grown_dataset_keeps_its_replay() -> None:
    log, nb, sim, p0 = _simulate((0.5, 0.0, 0.0), steps=3)
    r = Replay.empty(len(p0))
    exposure.advance(r, log, nb, sim, 1.0, p0 * 4.0, (1 - p0) * 4.0)
    g = r.resized(len(p0) + 10)
    assert g.exposure.shape == (3, len(p0) + 10) and np.all(g.last[-10:] == -1)
    np.testing.assert_array_equal(g.succ[: len(p0)], r.succ)


async def _run_id(state: AppState, name: str) -> int:
    async with state.sessionmaker() as s:
        return (await s.execute(select(Run.id).where(Run.name == name))).scalar_one()


async def _learning_run(
    client: httpx.AsyncClient, state: AppState, uid: str, tracking_on: bool
) -> tuple[str, list[str], np.ndarray]:
    """300 prompts; each step rolls out 100 and the policy gains 0.6 logit on mixed ones."""
    ds, run = f"ds-{uid}", f"run-{uid}"
    await client.post("/v1/datasets", json={"name": ds, "embedder": "hashing"})
    ids = [f"p{i}" for i in range(300)]
    texts = [
        {"id": p, "text": f"problem {i} about {i % 17} apples and {i % 5} pears"}
        for i, p in enumerate(ids)
    ]
    assert (
        await client.post(f"/v1/datasets/{ds}/prompts", json={"prompts": texts})
    ).status_code == 200
    await state.jobs.idle()
    sel = {"fit_min_outcomes": 100, "refit_every": 100, "tracking": tracking_on}
    body = {"name": run, "dataset": ds, "group_size": 8, "selection": sel}
    assert (await client.post("/v1/runs", json=body)).status_code == 201
    rng = np.random.default_rng(3)
    z = rng.normal(0.0, 1.0, 300)
    for step in range(12):
        batch = rng.choice(300, 100, replace=False)
        results = []
        for i in batch:
            rewards = (rng.random(8) < 1 / (1 + np.exp(-z[i]))).astype(float)
            results.append({"prompt_id": ids[i], "rewards": rewards.tolist()})
            z[i] += 1.2 * rewards.std()  # 0.6 logit for a group of 4/8
        r = await client.post(f"/v1/runs/{run}/outcomes", json={"step": step, "results": results})
        assert r.status_code == 200
        await state.jobs.idle()
    return run, ids, 1 / (1 + np.exp(-z))


async def _estimates(client: httpx.AsyncClient, state: AppState, run: str, ids: list[str]) -> Any:
    assert await state.fits.maybe_fit(await _run_id(state, run), force=True) is not None
    items = (await client.post(f"/v1/runs/{run}/predict", json={"prompt_ids": ids})).json()
    return np.array([i["pass_rate"] for i in items["items"]])


async def test_a_learning_run_fits_gains_and_moves_trained_prompts_up(
    client: httpx.AsyncClient, state: AppState, uid: str
) -> None:
    """The same log with tracking off and on: on, estimates sit nearer today's rates."""
    off, ids, truth = await _learning_run(client, state, f"{uid}-off", False)
    on, _, same = await _learning_run(client, state, uid, True)
    assert np.array_equal(truth, same)
    est_off = await _estimates(client, state, off, ids)
    est_on = await _estimates(client, state, on, ids)
    cal = (await client.get(f"/v1/runs/{on}/predictor")).json()["calibration"]
    assert cal["tracking_rows"] >= exposure.MIN_ROWS
    assert 0.8 < cal["tracking_gain_own"] < 1.6, cal  # the run's law: 1.2 per unit sd
    err_off = np.mean(np.abs(est_off - truth))
    err_on = np.mean(np.abs(est_on - truth))
    assert err_on < err_off - 0.01, (err_on, err_off)
    assert np.mean(est_on) > np.mean(est_off)


async def test_tracking_off_stores_no_replay_and_pruning_drops_old_ones(
    client: httpx.AsyncClient, state: AppState, uid: str
) -> None:
    off, _, _ = await _learning_run(client, state, f"{uid}-off", False)
    on, _, _ = await _learning_run(client, state, uid, True)
    for _ in range(versions.KEEP_BLOBS):
        assert await state.fits.maybe_fit(await _run_id(state, on), force=True)
    async with state.sessionmaker() as s:
        rows = (
            await s.execute(
                select(Run.name, PredictorVersion.version, func.length(PredictorVersion.tracking))
                .join(Run, Run.id == PredictorVersion.run_id)
                .where(Run.name.in_([off, on]))
                .order_by(Run.name, PredictorVersion.version)
            )
        ).all()
    assert all(n is None for name, _, n in rows if name == off)
    stored = [(v, n) for name, v, n in rows if name == on]
    newest = max(v for v, _ in stored)
    for v, n in stored:
        assert (n is not None and n > 0) == (v > newest - versions.KEEP_BLOBS), (v, n)


def test_late_groups_fold_in_as_the_hot_stats_do() -> None:
    """A group reported for an earlier step weighs in discounted, as add_group folds it."""
    from service.estimator.beta import add_group

    groups = [(0, 0, 8, 3), (0, 10, 8, 5), (0, 3, 8, 8), (1, 4, 8, 2)]  # idx, step, n, k
    log = Log(*(np.array(c) for c in zip(*groups, strict=True)), np.full(4, 0.4))  # type: ignore[arg-type]
    r = Replay.empty(2)
    nb, sim = np.zeros((2, 0), np.int64), np.zeros((2, 0))
    exposure.advance(r, log, nb, sim, 0.9, np.ones(2), np.ones(2))
    stats = None
    for _, s, n, k in groups[:3]:
        stats = add_group(stats, s, n, k, 0.9)
    assert stats is not None
    assert (r.succ[0], r.fail[0]) == pytest.approx((stats.disc_successes, stats.disc_failures))
    assert r.weight[0] == pytest.approx(stats.disc_successes + stats.disc_failures)
    assert r.last[0] == 10 and r.step == 10  # the latest step, not the last reported


def test_shifts_stay_bounded_and_posteriors_proper() -> None:
    """However stale a prompt, its shift is capped and its Beta keeps both counts positive."""
    from service.estimator.beta import shift_logit

    log, nb, sim, p0 = _simulate((0.5, 0.0, 0.0), steps=10)
    r = Replay.empty(len(p0))
    exposure.advance(r, log, nb, sim, 1.0, p0 * 4.0, (1 - p0) * 4.0)
    s = exposure.shifts(r, np.array([2.0, 2.0, 2.0]), nb, sim, 1.0)
    assert np.abs(s.shift).max() == pytest.approx(exposure.MAX_SHIFT)
    a, b = shift_logit(np.array([5.0, 0.01]), np.array([0.01, 5.0]), np.array([40.0, -40.0]))
    assert np.all(a > 0) and np.all(b > 0)


async def test_selection_reads_a_versions_shifts_from_their_own_column_or_an_old_replay(
    client: httpx.AsyncClient, state: AppState, uid: str
) -> None:
    """A new version's shifts are read without its replay; one stored before, from the replay."""
    import io

    from tests.fixtures.api import make_dataset, make_run

    await make_dataset(client, f"d{uid}", 6)
    await make_run(client, f"r{uid}", f"d{uid}")
    replay = Replay.empty(6)
    shifts = exposure.Shifts(
        np.linspace(-1, 1, 6).astype(np.float32), np.full(6, 2.0, np.float32), 7
    )
    old = io.BytesIO()  # the format before migration f4c1a7d2e9b3: both in one npz
    np.savez(
        old,
        **replay.arrays(),
        shift=shifts.shift,
        shift_weight=shifts.weight,
        shift_step=shifts.step,
    )
    async with state.sessionmaker() as session:
        run_id = (await session.execute(select(Run.id).where(Run.name == f"r{uid}"))).scalar_one()
        common = {"run_id": run_id, "trained_on": 0, "state": b"", "priors": b"\0" * 24}
        cal = {"tracking_gain_own": 0.2}
        session.add(PredictorVersion(version=1, tracking=old.getvalue(), calibration=cal, **common))
        await session.commit()
        got = await versions.priors(state.predictor_cache, session, run_id)
        assert got is not None and got.tracked is not None and got.tracked.step == 7
        np.testing.assert_array_equal(got.tracked.shift, shifts.shift)

        moved = exposure.Shifts(shifts.shift * 2, shifts.weight, 8)
        session.add(
            PredictorVersion(
                version=2,
                tracking=tracking.pack(replay),
                shifts=tracking.pack_shifts(moved),
                calibration=cal,
                **common,
            )
        )
        await session.commit()
        got = await versions.priors(state.predictor_cache, session, run_id)
        assert got is not None and got.tracked is not None and got.tracked.step == 8
        np.testing.assert_array_equal(got.tracked.shift, moved.shift)


def _replay_group_by_group(
    r: Replay, log: Log, nb: Any, sim: Any, discount: float, alpha: Any, beta: Any
) -> None:
    """The replay before it folded whole steps as arrays: one group at a time, as written."""
    new_rows: list[list[float]] = []
    pending = [tuple(p) for p in r.pending]
    for g in range(len(log.idx)):
        i, s, n, k = int(log.idx[g]), int(log.step[g]), int(log.n[g]), int(log.k[g])
        if s > r.step:
            r.pending = np.array(pending, dtype=np.float64).reshape(-1, 2)
            exposure._train(r, nb, sim)
            pending = []
            r.step = s
        f = 1.0
        if r.last[i] >= 0 and s >= r.last[i]:
            decay = discount ** (s - int(r.last[i]))
            r.succ[i] *= decay
            r.fail[i] *= decay
            r.weight[i] *= decay
            r.weighted[:, i] *= decay
            if r.weight[i] > 0:
                a, b = r.succ[i] + alpha[i], r.fail[i] + beta[i]
                dist = r.exposure[:, i] - r.weighted[:, i] / r.weight[i]
                new_rows.append([a / (a + b), *dist.tolist(), n, k])
        elif r.last[i] >= 0:
            f = discount ** (int(r.last[i]) - s)
        r.succ[i] += k * f
        r.fail[i] += (n - k) * f
        r.weight[i] += n * f
        r.weighted[:, i] += n * f * r.exposure[:, i]
        r.last[i] = max(int(r.last[i]), s)
        if log.sd[g] > 0:
            pending.append((i, float(log.sd[g])))
    r.pending = np.array(pending, dtype=np.float64).reshape(-1, 2)
    if new_rows:
        r.rows = np.vstack([r.rows, np.array(new_rows)])[-exposure.KEEP_ROWS :]


def test_folding_steps_as_arrays_matches_the_group_by_group_replay() -> None:
    """Distinct prompts fold as arrays, repeats one by one: the same replay as group by group.

    Three logs: every step's prompts distinct (arrays only), the same with a tenth of its groups
    reported late (arrays, late groups included), and with 300 groups repeated (both paths)."""
    log, nb, sim, p0 = _simulate((0.4, 0.2, 0.01), steps=10)
    rng = np.random.default_rng(3)
    late = log.step - np.where(rng.random(len(log.idx)) < 0.1, rng.integers(1, 5, len(log.idx)), 0)
    lates = Log(log.idx, np.maximum(late, 0), log.n, log.k, log.sd)
    extra = rng.choice(len(log.idx), 300, replace=False)
    order = np.argsort(np.concatenate([np.arange(len(log.idx)), extra + 0.5]), kind="stable")
    repeats = Log(
        *(
            np.concatenate([getattr(lates, f), getattr(lates, f)[extra]])[order]
            for f in ("idx", "step", "n", "k", "sd")
        )
    )
    alpha, beta = p0 * 4.0, (1 - p0) * 4.0
    for log_ in (log, lates, repeats):
        fast, slow = Replay.empty(len(p0)), Replay.empty(len(p0))
        for a, b in itertools.pairwise([0, 250, 777, len(log_.idx)]):  # cuts fall mid-step
            exposure.advance(fast, _cut(log_, a, b), nb, sim, 0.97, alpha, beta)
            _replay_group_by_group(slow, _cut(log_, a, b), nb, sim, 0.97, alpha, beta)
        assert len(fast.rows) > 300
        for name, value in slow.arrays().items():
            np.testing.assert_allclose(fast.arrays()[name], value, rtol=1e-12, err_msg=name)
