"""A family of simulated training settings, the yardstick for the service's selection.

Run: `.venv/bin/python -m benchmarks.scenarios [--quick] [--scenarios a,b] [--methods m,n]
[--seeds N] [--informative JSON] [--backend embedded|postgres] [--embedder NAME] [--json PATH]`;
`--report PATH` prints the tables and plot again from a `--json` file without running.
Method keys for `--methods`: uniform, dapo, window, target, informative, oracle (or the names
in the table). `--quick` collects fewer informative groups (N) per scenario: informative alone
over every scenario takes about 10 minutes on 2 cores, most of it predictor fits. At those
sizes a run serves well under one pass of a 12,000 pool and re-serves few prompts, so the
learning laws barely tell apart there; the full sizes are the yardstick.

Each scenario is a learning law (benchmarks/dynamics.py) on real starting pass rates, a pool,
and a regime (batch, G). Every method collects the same number N of informative groups (not
all rewards equal, as the trainer saw them) and trains on them; what differs is how many
rollouts that took. Methods: uniform GRPO, DAPO dynamic sampling (resample until a batch of
informative groups), `window`, `target` and `informative` through a real `depo serve` over
HTTP, created with the service's defaults (no `selection` at all; `--informative` adds
settings to informative's), and an oracle without the service that knows every current pass
rate and serves the batch's prompts likeliest to give a mixed group from the whole pool each
step (the ceiling). Each due predictor fit is waited out between steps, as a minute-long real
step would, so results depend on the machine's speed only through a fit's own time cap
(4 s, which fits of a 12,000 pool reach on 2 cores: expect a few % between repeats). One service process and one
dataset upload (the dataset's default embedder) serve all methods of a (scenario, seed).

| scenario | what it is |
|---|---|
| own | A group teaches only its own prompt (eta 0.25 per unit of reward sd); the held-out set never moves, so there is no target. |
| embed | benchmarks/simulator.py's law, the one the service was tuned on: own + 10 nearest neighbours by the hashing embedder (0.12 x cosine) + every prompt (1.5e-4). |
| topics | Own, plus transfer to the prompts of the same hidden cluster (200 clusters drawn at random, so relatedness follows no embedding; a mass of 2.0 logit per unit shared by the cluster, which gives about embed's held-out gain). |
| math-topics | MATH train problems related by type x level (35 clusters, mass 2.0); their starting rates are unlabelled, so each level takes DeepScaleR's pass rates from its quantile band (level 1 the easiest band, level 5 the hardest, bands sized by the levels' shares). |
| global | Only a global shift: every prompt moves together by 1.5e-4 per unit of reward sd; trained prompts get nothing of their own. |
| mix | Own (0.25) + hidden-cluster transfer (mass 1.0, 200 random clusters) + global (1e-4). |
| forget | The embed law, and every prompt without a mixed group in a step drifts 2% of the way back to its starting logit. |
| wander | The embed law, and after every step each prompt's logit takes a random step of sd 0.05 (trained or not; about 0.7 logit over a full run): churn that no model of training predicts. |
| hetero | The embed law, with each prompt's own learning times its learnability, a Gamma draw of mean 1 and variance 2: a quarter of the prompts learn under a tenth of the mean, a tenth over 2.7 times it, and one own gain fits none of them. |
| decline | The embed law with a negative global term (-1e-4 per unit of reward sd): training on some prompts costs every prompt a little, so the held-out pass rate falls (about 0.04 over a run) and there is no target. |
| jump | The embed law, and after step 50 every prompt's logit rises by 1 at once (a policy that picks up the answer format): estimates of every seen prompt go stale in one step, and no learning law predicts it. |
| noisy | The embed law with a noisy verifier: 10% of reported rewards flipped; learning follows the true rewards, and informative groups are counted by the reported ones. |
| partial | The embed law with partial credit: a reward is the share of 4 sub-checks passed (pass chance per rollout ~ Beta(p, 1 - p), so the mean is p); success_threshold 0.5; zero variance = all rewards equal. |
| fast | The embed law with four times the own learning (1.0 per unit): a prompt leaves the zone after a few groups, so a run keeps needing new ones. |
| pool4k | Regime: a 4,000-prompt pool seen many times (embed law). |
| dev1 | Regime: the whole 14,682-prompt dev file less 1,000 held out, about one epoch of uniform (embed law). |
| dapo | Regime: batch 512, G = 16 (embed law). |
| g4 | Regime: G = 4 (embed law). |

DAPO is efficacy.py's: each refill round asks for a full batch and the surplus informative
groups of the last round are dropped, as verl's DAPO drops them, so it spends more rollouts per
trained informative group than uniform GRPO; the table gives ratios to both.

Non-regime scenarios use a 12,000-prompt pool (1,000 held out), batch 128 and G 8, so a run
goes over the pool a few times at most. Metrics: rollouts to N informative groups; headroom
captured = (DAPO - method) / (DAPO - oracle) in those rollouts; zero-variance share of served
groups; rollouts to a held-out target (held-out = mean current pass rate of prompts never
trained on; target = start + 60% of uniform GRPO's gain over its run); held-out pass rate at
N; and for `informative` the tracking gains the service fitted (`GET /predictor`).
Writes `benchmarks/results/scenarios.png` (held-out pass rate against rollouts; each line
ends at that method's rollouts to N).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from depo_client import DepoClient

from benchmarks._server import serve
from benchmarks.dynamics import (
    FloatArray,
    IntArray,
    Law,
    Relations,
    Rewards,
    World,
    nearest,
    quantile_rates,
)
from benchmarks.efficacy import await_fit
from benchmarks.simulator import DATA, LearningModel, embed

RESULTS = Path(__file__).resolve().parent / "results"
MATH = DATA.parent / "math_levels.jsonl"

_SIM = LearningModel()
EMBED = Law(eta_self=_SIM.eta_self, eta_neighbour=_SIM.eta_neighbour, eta_global=_SIM.eta_global)
K_NEIGHBOURS = _SIM.k_neighbours


@dataclass(frozen=True)
class Scenario:
    name: str
    law: Law
    rewards: Rewards = field(default_factory=Rewards)
    source: str = "dsr"  # dsr: deepscaler_passrate_dev; math: math_levels (train split)
    pool: int = 12_000  # 0: the whole file less the held-out set
    heldout: int = 1_000
    batch: int = 128
    g: int = 8
    clusters: str = ""  # "": none; random: n_clusters drawn at random; math: type x level
    n_clusters: int = 200
    n_full: int = 20_000  # informative groups every method collects
    n_quick: int = 3_000
    success_threshold: float | None = None


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario("own", Law(eta_self=0.25)),
        Scenario("embed", EMBED),
        Scenario("topics", Law(eta_self=0.25, topic_mass=2.0), clusters="random"),
        Scenario(
            "math-topics",
            Law(eta_self=0.25, topic_mass=2.0),
            source="math",
            pool=0,
            clusters="math",
            n_full=12_000,
            n_quick=2_500,
        ),
        Scenario("global", Law(eta_self=0.0, eta_global=1.5e-4)),
        Scenario("mix", Law(eta_self=0.25, topic_mass=1.0, eta_global=1e-4), clusters="random"),
        Scenario("forget", replace(EMBED, forget=0.02)),
        Scenario("wander", replace(EMBED, wander=0.05)),
        Scenario("hetero", replace(EMBED, spread=2.0)),
        Scenario("decline", replace(EMBED, eta_global=-1e-4)),
        Scenario("jump", replace(EMBED, jump=1.0)),
        Scenario("noisy", EMBED, Rewards("noisy", flip=0.1)),
        Scenario("partial", EMBED, Rewards("partial", checks=4), success_threshold=0.5),
        Scenario("fast", replace(EMBED, eta_self=1.0)),
        Scenario("pool4k", EMBED, pool=4_000, n_full=16_000),
        Scenario("dev1", EMBED, pool=0, n_full=8_000),
        Scenario("dapo", EMBED, batch=512, g=16, n_quick=4_000),
        Scenario("g4", EMBED, g=4, n_full=16_000, n_quick=2_000),
    ]
}


@dataclass(frozen=True)
class Method:
    name: str
    key: str  # short name, also accepted by --methods
    strategy: str  # a service strategy, or "oracle"
    dapo: bool = False


ORACLE = "oracle: true pass rates (ceiling)"
METHODS = [
    Method("uniform GRPO", "uniform", "uniform"),
    Method("DAPO dynamic sampling", "dapo", "uniform", dapo=True),
    Method("window", "window", "window"),
    Method("target", "target", "target"),
    Method("informative", "informative", "informative"),
    Method(ORACLE, "oracle", "oracle"),
]


@dataclass
class Trace:
    """One method's run: after each step, rollouts, informative groups trained and held-out."""

    rollouts: list[int] = field(default_factory=list)
    informative: list[int] = field(default_factory=list)
    heldout: list[float] = field(default_factory=list)
    served: int = 0
    zero_var: int = 0
    served_first: int = 0  # groups of prompts served for the first time in the run
    zero_var_first: int = 0
    first_p_mixed: float = 0.0  # true P(mixed) summed over first serves
    unseen_p_mixed: float = 0.0  # the unseen pool's mean true P(mixed), summed the same way
    wall_s: float = 0.0
    calibration: dict[str, float] = field(default_factory=dict)

    def record(self, rollouts: int, informative: int, heldout: float) -> None:
        self.rollouts.append(rollouts)
        self.informative.append(informative)
        self.heldout.append(heldout)


@dataclass
class Setup:
    """One (scenario, seed): the problems, their starting rates and relations; shared by methods."""

    scenario: Scenario
    seed: int
    ids: list[str]  # pool then held-out
    texts: list[str]
    start: FloatArray
    n_pool: int
    relations: Relations

    def world(self) -> World:
        sc = self.scenario
        return World(self.start, self.n_pool, sc.law, self.relations, sc.rewards, self.seed)


# -- problems ------------------------------------------------------------------------------------

_ROWS: dict[Path, list[dict[str, Any]]] = {}
_EMB: dict[str, npt.NDArray[np.float32]] = {}
_NEAREST: dict[tuple[str, ...], tuple[IntArray, FloatArray]] = {}


def _rows(path: Path) -> list[dict[str, Any]]:
    if path not in _ROWS:
        _ROWS[path] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return _ROWS[path]


def _neighbours(ids: list[str], texts: list[str]) -> tuple[IntArray, FloatArray]:
    """The simulator's neighbour law: k nearest by the service's hashing embedder, cached."""
    key = tuple(ids)
    if key not in _NEAREST:
        missing = [i for i, pid in enumerate(ids) if pid not in _EMB]
        if missing:
            vecs = embed([texts[i] for i in missing])
            for i, v in zip(missing, vecs, strict=True):
                _EMB[ids[i]] = v
        emb = np.stack([_EMB[pid] for pid in ids])
        _NEAREST[key] = nearest(emb, K_NEIGHBOURS)
    return _NEAREST[key]


def build(sc: Scenario, seed: int) -> Setup:
    rng = np.random.default_rng(seed)
    clusters: IntArray | None = None
    if sc.source == "math":
        rows = [r for r in _rows(MATH) if r["split"] == "train"]
        order = rng.permutation(len(rows))
        n_pool = sc.pool or len(rows) - sc.heldout
        pick = [rows[i] for i in order[: n_pool + sc.heldout]]
        levels = np.array([int(r["level"]) for r in pick], dtype=np.int64)
        reference = np.array([float(r["pass_rate"]) for r in _rows(DATA)])
        start = quantile_rates(levels, reference, np.random.default_rng(seed + 7))
        types = sorted({str(r["type"]) for r in rows})
        type_of = np.array([types.index(str(r["type"])) for r in pick], dtype=np.int64)
        clusters = type_of * 5 + (levels - 1)
    else:
        rows = _rows(DATA)
        order = rng.permutation(len(rows))  # as simulator.load_problems
        n_pool = sc.pool or len(rows) - sc.heldout
        pick = [rows[i] for i in order[: n_pool + sc.heldout]]
        start = np.array([float(r["pass_rate"]) for r in pick])
    ids = [str(r["id"]) for r in pick]
    texts = [str(r["problem"]) for r in pick]
    if sc.clusters == "random":
        crng = np.random.default_rng(seed + 1_000)
        clusters = crng.integers(0, sc.n_clusters, len(ids)).astype(np.int64)
    elif sc.clusters != "math":
        clusters = None
    nb = w = None
    if sc.law.eta_neighbour:
        nb, w = _neighbours(ids, texts)
    return Setup(sc, seed, ids, texts, start, n_pool, Relations(nb, w, clusters))


def upload(c: DepoClient, setup: Setup, embedder: str | None = None) -> str:
    """The pool as a dataset (on the default embedder unless named); waits until it is embedded."""
    name = f"{setup.scenario.name}-{setup.seed}-{uuid.uuid4().hex[:6]}"
    c.create_dataset(name, embedder=embedder)
    pool = list(zip(setup.ids[: setup.n_pool], setup.texts[: setup.n_pool], strict=True))
    c.upload_prompts(name, pool, progress=False)
    deadline = time.perf_counter() + 300
    while time.perf_counter() < deadline:
        ds = c.get_dataset(name)
        if ds.embedded >= ds.prompt_count:
            break
        time.sleep(0.2)
    return name


# -- runs ----------------------------------------------------------------------------------------


def _mixed(reported: FloatArray) -> npt.NDArray[np.bool_]:
    out: npt.NDArray[np.bool_] = (reported != reported[:, :1]).any(axis=1)
    return out


def run_service(
    c: DepoClient,
    m: Method,
    dataset: str,
    setup: Setup,
    n_target: int,
    selection: dict[str, Any] | None,
) -> Trace:
    """One method through the service until `n_target` informative groups were trained on."""
    sc = setup.scenario
    world = setup.world()
    index = {pid: i for i, pid in enumerate(setup.ids[: setup.n_pool])}
    run = f"{sc.name}-{m.key}-{uuid.uuid4().hex[:8]}"
    c.create_run(
        run,
        dataset,
        sc.g,
        success_threshold=sc.success_threshold,
        strategy=m.strategy,
        selection=selection,
    )
    tr = Trace()
    tr.record(0, 0, world.heldout_pass_rate())
    used = informative = step = 0
    seen = np.zeros(setup.n_pool, dtype=bool)
    while informative < n_target:
        parts: list[tuple[IntArray, FloatArray, npt.NDArray[np.bool_]]] = []
        have = 0
        for rounds in range(1000):
            b = c.next_batch(run, step, sc.batch, partition=f"g{rounds}")
            idx = np.array([index[p.id] for p in b.prompts], dtype=np.int64)
            reported, true = world.rollout(idx, sc.g)
            mixed = _mixed(reported)
            used += reported.size
            tr.served += len(idx)
            tr.zero_var += int((~mixed).sum())
            first = ~seen[idx]
            if first.any():
                unseen = np.flatnonzero(~seen)
                tr.first_p_mixed += float(world.p_mixed(idx[first], sc.g).sum())
                tr.unseen_p_mixed += float(world.p_mixed(unseen, sc.g).mean()) * int(first.sum())
            tr.served_first += int(first.sum())
            tr.zero_var_first += int((~mixed & first).sum())
            seen[idx] = True
            results = [
                {"prompt_id": p.id, "rewards": reported[j].tolist()}
                for j, p in enumerate(b.prompts)
            ]
            c.report(run, step, results, batch_id=b.batch_id)
            keep = mixed if m.dapo else np.ones(len(idx), dtype=bool)
            parts.append((idx[keep], true[keep], mixed[keep]))
            have += int(keep.sum())
            if not m.dapo or have >= sc.batch or not len(idx):
                break
        if m.strategy != "uniform":
            await_fit(c, run)
        idx = np.concatenate([p[0] for p in parts])[: sc.batch]
        true = np.concatenate([p[1] for p in parts])[: sc.batch]
        # informative as the trainer saw it (reported rewards), among the groups trained on
        informative += int(np.concatenate([p[2] for p in parts])[: sc.batch].sum())
        world.train(idx, true)
        step += 1
        tr.record(used, informative, world.heldout_pass_rate())
    if m.strategy != "uniform":
        info = c.predictor(run)
        tr.calibration = {
            k: float(v)
            for k, v in info.calibration.items()
            if ("gain" in k or k == "tracking_rows") and isinstance(v, int | float)
        }
    return tr


def run_oracle(setup: Setup, n_target: int) -> Trace:
    """The ceiling: true current pass rates, the whole pool ranked by P(mixed group) each step."""
    sc = setup.scenario
    world = setup.world()
    rng = np.random.default_rng(setup.seed)
    pool = np.arange(setup.n_pool, dtype=np.int64)
    tr = Trace()
    tr.record(0, 0, world.heldout_pass_rate())
    used = informative = 0
    while informative < n_target:
        score = world.p_mixed(pool, sc.g)
        keep = pool[np.lexsort((rng.random(len(pool)), -score))[: sc.batch]]
        reported, true = world.rollout(keep, sc.g)
        mixed = _mixed(reported)
        used += reported.size
        tr.served += len(keep)
        tr.zero_var += int((~mixed).sum())
        informative += int(mixed.sum())
        world.train(keep, true)
        tr.record(used, informative, world.heldout_pass_rate())
    return tr


# -- metrics -------------------------------------------------------------------------------------


def _first_crossing(xs: Sequence[float], ys: Sequence[float], level: float) -> float:
    """x where y first reaches `level`, linear between the steps around it; NaN if never."""
    for i, y in enumerate(ys):
        if y >= level:
            if i == 0:
                return float(xs[0])
            y0, x0, x1 = ys[i - 1], xs[i - 1], xs[i]
            return float(x0 + (x1 - x0) * (level - y0) / (y - y0))
    return float("nan")


def rollouts_to_n(tr: Trace, n: int) -> float:
    return _first_crossing(tr.rollouts, tr.informative, n)


def heldout_at_n(tr: Trace, n: int) -> float:
    return float(np.interp(n, tr.informative, tr.heldout))


@dataclass
class Row:
    """One (scenario, method)'s figures over seeds."""

    to_n: list[float]
    per_group: list[float]
    zero_var: list[float]
    to_target: list[float]
    heldout_n: list[float]
    headroom: list[float]
    wall_s: list[float]


def summarise(traces: dict[str, list[Trace]], n: int) -> tuple[dict[str, Row], float | None]:
    """Rows per method, and the held-out target (None when uniform GRPO's held-out did not rise)."""
    target: float | None = None
    base = traces.get("uniform GRPO")
    if base:
        start = statistics.mean(t.heldout[0] for t in base)
        gain = statistics.mean(heldout_at_n(t, n) for t in base) - start
        target = start + 0.6 * gain if gain > 1e-4 else None
    dapo = traces.get("DAPO dynamic sampling")
    oracle = traces.get(ORACLE)
    rows: dict[str, Row] = {}
    for name, ts in traces.items():
        to_n = [rollouts_to_n(t, n) for t in ts]
        head = []
        if dapo and oracle:
            for i, r in enumerate(to_n):
                d, o = rollouts_to_n(dapo[i], n), rollouts_to_n(oracle[i], n)
                head.append((d - r) / (d - o) if d != o else float("nan"))
        rows[name] = Row(
            to_n=to_n,
            per_group=[r / n for r in to_n],
            zero_var=[t.zero_var / max(t.served, 1) for t in ts],
            to_target=[
                _first_crossing(t.rollouts, t.heldout, target) if target is not None else np.nan
                for t in ts
            ],
            heldout_n=[heldout_at_n(t, n) for t in ts],
            headroom=head,
            wall_s=[t.wall_s for t in ts],
        )
    return rows, target


def _fmt(xs: list[float], kind: str = "num") -> str:
    xs = [x for x in xs if x == x]
    if not xs:
        return "-"
    mean = statistics.mean(xs)
    sd = statistics.stdev(xs) if len(xs) > 1 else None
    if kind == "pct":
        out = f"{100 * mean:.1f}%"
        return out if sd is None else f"{out} ± {100 * sd:.1f}"
    if kind == "k":
        out = f"{mean / 1000:.1f}k"
        return out if sd is None else f"{out} ± {sd / 1000:.1f}k"
    digits = {"num": 3, "1": 1, "2": 2, "0": 0}[kind]
    out = f"{mean:.{digits}f}"
    return out if sd is None else f"{out} ± {sd:.{digits}f}"


# -- driver --------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated")
    ap.add_argument(
        "--methods",
        default=",".join(m.key for m in METHODS),
        help="comma-separated names or keys: " + ", ".join(f"{m.key}" for m in METHODS),
    )
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="smaller N per scenario")
    ap.add_argument(
        "--scale", type=float, default=1.0, help="multiply each scenario's full N by this"
    )
    ap.add_argument(
        "--informative", default="{}", help="JSON merged into informative's (empty) selection"
    )
    ap.add_argument("--backend", choices=["embedded", "postgres"], default="embedded")
    ap.add_argument(
        "--embedder", default=None, help="the datasets' embedder (default: the service's)"
    )
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--plot", default=str(RESULTS / "scenarios.png"))
    ap.add_argument(
        "--report",
        default=None,
        metavar="JSON",
        help="report results written by --json; run nothing",
    )
    return ap


def pick_methods(spec: str) -> list[Method]:
    wanted = [s.strip() for s in spec.split(",") if s.strip()]
    out = []
    for w in wanted:
        match = [m for m in METHODS if w in (m.name, m.key)]
        if not match:
            raise SystemExit(f"unknown method {w!r}; choose from {[m.key for m in METHODS]}")
        out.append(match[0])
    return [m for m in METHODS if m in out]  # table order


def main() -> None:
    args = parser().parse_args()
    if args.report:
        report(*load(args.report), None, args.plot)
        return
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in names if s not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenarios {unknown}; choose from {list(SCENARIOS)}")
    methods = pick_methods(args.methods)
    informative_sel: dict[str, Any] = json.loads(args.informative)
    results: dict[str, dict[str, list[Trace]]] = {}
    walls: dict[str, float] = {}
    t_all = time.perf_counter()
    for name in names:
        sc = SCENARIOS[name]
        n = sc.n_quick if args.quick else round(sc.n_full * args.scale)
        results[name] = {m.name: [] for m in methods}
        t_sc = time.perf_counter()
        for seed in range(args.seeds):
            setup = build(sc, seed)
            on_service = [m for m in methods if m.strategy != "oracle"]
            if on_service:
                # a simulated step takes milliseconds, a real one a minute: refit on counts alone
                with (
                    serve(args.backend, env={"DEPO_REFIT_MIN_SECONDS": "0"}) as url,
                    DepoClient(url, timeout=120) as c,
                ):
                    dataset = upload(c, setup, args.embedder)
                    for m in on_service:
                        sel = informative_sel if m.strategy == "informative" else {}
                        t0 = time.perf_counter()
                        tr = run_service(c, m, dataset, setup, n, sel or None)
                        tr.wall_s = time.perf_counter() - t0
                        results[name][m.name].append(tr)
                        _progress(name, seed, m.name, tr, n)
            if any(m.strategy == "oracle" for m in methods):
                t0 = time.perf_counter()
                tr = run_oracle(setup, n)
                tr.wall_s = time.perf_counter() - t0
                results[name][ORACLE].append(tr)
                _progress(name, seed, ORACLE, tr, n)
        walls[name] = time.perf_counter() - t_sc
        print(f"{name}: {walls[name]:.0f} s", file=sys.stderr)
    meta = {
        "quick": args.quick,
        "seeds": args.seeds,
        "backend": args.backend,
        "informative": args.informative,
        "scale": args.scale,
    }
    ns = {
        k: SCENARIOS[k].n_quick if args.quick else round(SCENARIOS[k].n_full * args.scale)
        for k in results
    }
    report(results, walls, ns, meta, args.json, args.plot)
    print(f"\ntotal wall time {time.perf_counter() - t_all:.0f} s", file=sys.stderr)


def _progress(scenario: str, seed: int, method: str, tr: Trace, n: int) -> None:
    print(
        f"  {scenario} seed {seed} {method:<24} {len(tr.rollouts) - 1:>4} steps, "
        f"{rollouts_to_n(tr, n) / 1000:.1f}k rollouts to {n} informative, zero-variance "
        f"{tr.zero_var / max(tr.served, 1):.1%} (first serves: {tr.served_first / max(tr.served, 1):.0%}"
        f" of groups, {tr.zero_var_first / max(tr.served_first, 1):.0%} zero-variance; true "
        f"P(mixed) {tr.first_p_mixed / max(tr.served_first, 1):.2f} against the unseen pool's "
        f"{tr.unseen_p_mixed / max(tr.served_first, 1):.2f}), "
        f"held-out {tr.heldout[0]:.3f} -> "
        f"{tr.heldout[-1]:.3f} ({tr.wall_s:.0f} s)",
        file=sys.stderr,
    )


def report(
    results: dict[str, dict[str, list[Trace]]],
    walls: dict[str, float],
    ns: dict[str, int],
    meta: dict[str, Any],
    json_path: str | None,
    plot_path: str,
) -> None:
    """Print the tables, write the plot and, with `json_path`, the results."""
    scale = meta.get("scale", 1.0)
    mode = "quick" if meta["quick"] else ("full" if scale == 1.0 else f"N x {scale:g}")
    extra = meta["informative"]
    print(
        f"\n### Scenarios ({mode}, {meta['seeds']} seed{'s' * (meta['seeds'] > 1)}, "
        f"{meta['backend']}; services created with default selection"
        f"{', informative + ' + extra if extra != '{}' else ''})\n"
    )
    print(
        "| scenario | pool / batch / G | N | method | rollouts to N | per informative group "
        "| × DAPO | × uniform | headroom captured | zero-variance share | rollouts to target "
        "| held-out at N | wall s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    dump: dict[str, Any] = {}
    targets: dict[str, float | None] = {}
    for name, traces in results.items():
        sc = SCENARIOS[name]
        n = ns[name]
        traces = {k: v for k, v in traces.items() if v}
        rows, target = summarise(traces, n)
        targets[name] = target
        n_pool = _pool_size(sc)
        dapo = rows.get("DAPO dynamic sampling")
        uni = rows.get("uniform GRPO")
        for mname, row in rows.items():
            ratio = [a / b for a, b in zip(row.to_n, dapo.to_n, strict=True)] if dapo else []
            ratio_u = [a / b for a, b in zip(row.to_n, uni.to_n, strict=True)] if uni else []
            print(
                f"| {name} | {n_pool} / {sc.batch} / {sc.g} | {n} | {mname} | {_fmt(row.to_n, 'k')} "
                f"| {_fmt(row.per_group, '1')} | {_fmt(ratio, '2')} | {_fmt(ratio_u, '2')} "
                f"| {_fmt(row.headroom, 'pct')} "
                f"| {_fmt(row.zero_var, 'pct')} | {_fmt(row.to_target, 'k')} "
                f"| {_fmt(row.heldout_n)} | {_fmt(row.wall_s, '0')} |"
            )
        dump[name] = {
            "scenario": asdict(sc),
            "n": n,
            "target": target,
            "wall_s": walls[name],
            "methods": {
                mname: {
                    "summary": asdict(rows[mname]),
                    "traces": [asdict(t) for t in ts],
                }
                for mname, ts in traces.items()
            },
        }
    print(
        "\nTarget = start + 60% of uniform GRPO's held-out gain at N ('-': uniform's held-out did "
        "not rise, or the method did not get there). Headroom captured = (DAPO - method) / "
        "(DAPO - oracle) in rollouts to N."
    )
    print("\n| scenario | wall s | target |")
    print("|---|---|---|")
    for name in results:
        t = targets[name]
        print(f"| {name} | {walls[name]:.0f} | {'-' if t is None else f'{t:.3f}'} |")
    _gains(results)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        body = {"meta": meta, "scenarios": dump}
        Path(json_path).write_text(json.dumps(body, indent=1, default=float))
        print(f"\njson: {json_path}")
    _plot(results, targets, plot_path)


def load(
    path: str,
) -> tuple[dict[str, dict[str, list[Trace]]], dict[str, float], dict[str, int], dict[str, Any]]:
    """Results written by `--json`, to report again."""
    body = json.loads(Path(path).read_text())
    results: dict[str, dict[str, list[Trace]]] = {}
    walls: dict[str, float] = {}
    ns: dict[str, int] = {}
    for name, d in body["scenarios"].items():
        results[name] = {m: [Trace(**t) for t in v["traces"]] for m, v in d["methods"].items()}
        walls[name] = float(d["wall_s"])
        ns[name] = int(d["n"])
    return results, walls, ns, body["meta"]


def _pool_size(sc: Scenario) -> int:
    if sc.pool:
        return sc.pool
    path = MATH if sc.source == "math" else DATA
    rows = _rows(path)
    if sc.source == "math":
        rows = [r for r in rows if r["split"] == "train"]
    return len(rows) - sc.heldout


def _gains(results: dict[str, dict[str, list[Trace]]]) -> None:
    """What tracking fitted on informative's runs against what the law moves per unit."""
    runs = {k: v.get("informative") for k, v in results.items() if v.get("informative")}
    if not runs:
        return
    print("\nTracking gains fitted by `informative` (last version; logit per unit of reward sd):\n")
    print(
        "| scenario | own | neighbours | global | rows | the law: own / neighbours / topic / global / forget / wander / spread |"
    )
    print("|---|---|---|---|---|---|")
    for name, ts in runs.items():
        law = SCENARIOS[name].law
        cells = []
        for key in ("own", "neighbours", "global"):
            vals = [
                t.calibration[f"tracking_gain_{key}"]
                for t in ts or []
                if f"tracking_gain_{key}" in t.calibration
            ]
            if key == "global" and vals:
                cells.append(_fmt([v * 1e4 for v in vals], "2") + "e-4")
            else:
                cells.append(_fmt(vals))
        rows_ = [t.calibration.get("tracking_rows", float("nan")) for t in ts or []]
        print(
            f"| {name} | {' | '.join(cells)} | {_fmt(rows_, '0')} | {law.eta_self} / "
            f"{law.eta_neighbour} x cos / {law.topic_mass} / {law.eta_global:g} / {law.forget} / {law.wander} / {law.spread} |"
        )


def _plot(
    results: dict[str, dict[str, list[Trace]]], targets: dict[str, float | None], path: str
) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot)", file=sys.stderr)
        return
    k = len(results)
    cols = min(4, k)
    rows = -(-k // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    for ax, (name, traces) in zip(axes.ravel(), results.items(), strict=False):
        for mname, ts in traces.items():
            if not ts:
                continue
            grid = np.linspace(0, min(t.rollouts[-1] for t in ts), 100)
            ys = np.array([np.interp(grid, t.rollouts, t.heldout) for t in ts])
            ax.plot(grid / 1000, ys.mean(0), label=mname, lw=1.2)
        t = targets.get(name)
        if t is not None:
            ax.axhline(t, color="grey", ls="--", lw=0.8)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("rollouts (k)", fontsize=8)
        ax.set_ylabel("held-out pass rate", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[k:]:
        ax.axis("off")
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    if k < rows * cols:  # the legend in the first empty panel
        axes.ravel()[k].legend(handles, labels, loc="center", fontsize=8)
        fig.tight_layout()
    else:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 3), fontsize=8)
        fig.tight_layout(rect=(0, 0.06 + 0.1 / rows, 1, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"\nplot: {path}")


if __name__ == "__main__":
    main()
