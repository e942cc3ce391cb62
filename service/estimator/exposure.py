"""How far each prompt has moved since its evidence was gathered, replayed from the run's log.

A policy that trains on a prompt gets better at it, and at prompts like it; a prompt's counts
were gathered before that. Replaying the outcome log in order, each prompt accumulates three
training exposures, in units of reward sd summed over mixed groups (a zero-variance group
teaches nothing): its own groups, the groups of prompts that have it among their k nearest
neighbours (weighted by cosine), and every group of the run. Each of its groups is weighed in
at the exposures of its time, so the distance between a prompt's exposures now and its
evidence's average exposures says how much training its counts have not seen. The logit
gains per unit are fitted by binomial maximum likelihood on re-served groups: observed
successes against the prompt's estimate just before (prior plus discounted counts, unshifted)
moved by gains times that distance.

The replay is incremental: its state is stored with each predictor version, so a fit replays
only the outcomes since the previous one. Training of a step's groups takes effect when a
later step's group arrives, as a trainer updates after the step's rollouts; the shifts served
include the last step's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.optimize import minimize

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

EXPOSURES = ("own", "neighbours", "global")
MIN_ROWS = 200  # re-served groups before gains are fitted; until then drift_correction serves
KEEP_ROWS = 20_000  # the newest re-served groups the gains are fitted on
MAX_GAIN = 2.0  # logit per unit of exposure distance (reward sd of one mixed group)
MAX_SHIFT = 4.0  # logit: a prompt at 0.5 moves to 0.98 at most, however stale
RARE_SHARE = 0.001  # pruned rows: candidates share a column held by at most this share ...
RARE_MIN = 1_000  # ... or this many prompts
CANDIDATES = 400  # pruned rows: candidates scored by exact cosine


@dataclass
class Replay:
    """Per-prompt counts and exposures as of the last replayed outcome; stored as npz bytes."""

    exposure: F64  # (3, n): own, neighbours', global, for every prompt
    succ: F64  # discounted successes
    fail: F64
    weight: F64  # discounted rollouts, as weights of the evidence's exposures
    weighted: F64  # (3, n): discounted sum of rollouts times exposure at the time
    last: I64  # step of each prompt's last group, -1 if none
    step: int = -1  # latest step replayed
    pending: F64 = field(default_factory=lambda: np.zeros((0, 2)))  # (idx, sd) not yet trained
    rows: F64 = field(default_factory=lambda: np.zeros((0, 6)))  # base, 3 distances, n, k

    @classmethod
    def empty(cls, size: int) -> Replay:
        return cls(
            exposure=np.zeros((3, size)),
            succ=np.zeros(size),
            fail=np.zeros(size),
            weight=np.zeros(size),
            weighted=np.zeros((3, size)),
            last=np.full(size, -1, dtype=np.int64),
        )

    def resized(self, size: int) -> Replay:
        """The same replay over a dataset that has grown to `size` prompts."""
        extra = size - len(self.succ)
        if extra <= 0:
            return self
        more = Replay.empty(extra)
        return Replay(
            np.hstack([self.exposure, more.exposure]),
            np.concatenate([self.succ, more.succ]),
            np.concatenate([self.fail, more.fail]),
            np.concatenate([self.weight, more.weight]),
            np.hstack([self.weighted, more.weighted]),
            np.concatenate([self.last, more.last]),
            self.step,
            self.pending,
            self.rows,
        )

    def arrays(self) -> dict[str, Any]:
        return {f.name: np.asarray(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_arrays(cls, z: Mapping[str, Any]) -> Replay:
        parts: dict[str, Any] = {f.name: np.asarray(z[f.name]) for f in fields(cls)}
        parts["step"] = int(parts["step"])
        return cls(**parts)


@dataclass(frozen=True)
class Log:
    """Outcome groups in seq order: prompt idx, step, rollouts, successes, reward sd."""

    idx: I64
    step: I64
    n: I64
    k: I64
    sd: F64

    def cut(self, a: int, b: int) -> Log:
        """Groups a to b (exclusive), as a log of their own."""
        return Log(self.idx[a:b], self.step[a:b], self.n[a:b], self.k[a:b], self.sd[a:b])


def _train(r: Replay, nb: I64, nb_sim: F64) -> None:
    """Apply the pending step's mixed groups to the exposures of prompts and neighbours."""
    if not len(r.pending):
        return
    idx = r.pending[:, 0].astype(np.int64)
    sd = r.pending[:, 1]
    np.add.at(r.exposure[0], idx, sd)
    if nb.shape[1]:
        np.add.at(r.exposure[1], nb[idx].ravel(), (nb_sim[idx] * sd[:, None]).ravel())
    r.exposure[2] += sd.sum()
    r.pending = np.zeros((0, 2))


def advance(
    r: Replay,
    log: Log,
    nb: I64,
    nb_sim: F64,
    discount: float,
    prior_alpha: F64,
    prior_beta: F64,
) -> None:
    """Fold these groups in, recording each re-served one's estimate and exposure distances.

    The log is cut where a later step begins (its training happens there); a stretch whose
    prompts are all distinct folds as arrays, one with a prompt twice group by group. The two
    give the same floats: the same operations in the same order per prompt. A first fit on
    1,000,000 groups spent about 12 s in the group-by-group loop alone.
    """
    new_rows: list[F64] = []
    pending: list[F64] = [r.pending]
    if len(log.idx):
        reached = np.maximum.accumulate(np.maximum(log.step, r.step))
        cuts = np.flatnonzero(np.diff(np.concatenate([[r.step], reached])) > 0)
        for a, b in zip(
            np.concatenate([[0], cuts]), np.concatenate([cuts, [len(log.idx)]]), strict=True
        ):
            if a == b:
                continue
            if log.step[a] > r.step:  # a new step: the last one's training has happened
                r.pending = np.vstack(pending).reshape(-1, 2)
                _train(r, nb, nb_sim)
                pending = []
                r.step = int(log.step[a])
            part = log.cut(a, b)
            fold = _fold_arrays if len(np.unique(part.idx)) == b - a else _fold_groups
            rows, mixed = fold(r, part, discount, prior_alpha, prior_beta)
            new_rows.append(rows)
            pending.append(mixed)
    r.pending = np.vstack(pending).reshape(-1, 2)
    if new_rows:
        r.rows = np.vstack([r.rows, *new_rows])[-KEEP_ROWS:]


def _fold_groups(
    r: Replay, log: Log, discount: float, prior_alpha: F64, prior_beta: F64
) -> tuple[F64, F64]:
    """One group at a time: any order of prompts, repeats and late groups included."""
    new_rows: list[list[float]] = []
    pending: list[tuple[float, float]] = []
    for g in range(len(log.idx)):
        i, s, n, k = int(log.idx[g]), int(log.step[g]), int(log.n[g]), int(log.k[g])
        # as the hot stats fold it (stats.math.add_group): a late group weighs in discounted
        f = 1.0
        if r.last[i] >= 0 and s >= r.last[i]:
            decay = discount ** (s - int(r.last[i]))
            r.succ[i] *= decay
            r.fail[i] *= decay
            r.weight[i] *= decay
            r.weighted[:, i] *= decay
            if r.weight[i] > 0:
                a, b = r.succ[i] + prior_alpha[i], r.fail[i] + prior_beta[i]
                base = a / (a + b)
                dist = r.exposure[:, i] - r.weighted[:, i] / r.weight[i]
                new_rows.append([base, *dist.tolist(), n, k])
        elif r.last[i] >= 0:
            f = discount ** (int(r.last[i]) - s)
        r.succ[i] += k * f
        r.fail[i] += (n - k) * f
        r.weight[i] += n * f
        r.weighted[:, i] += n * f * r.exposure[:, i]
        r.last[i] = max(int(r.last[i]), s)
        if log.sd[g] > 0:
            pending.append((i, float(log.sd[g])))
    rows = np.array(new_rows, dtype=np.float64).reshape(-1, 6)
    return rows, np.array(pending, dtype=np.float64).reshape(-1, 2)


def _fold_arrays(
    r: Replay, log: Log, discount: float, prior_alpha: F64, prior_beta: F64
) -> tuple[F64, F64]:
    """`_fold_groups` for groups of distinct prompts, as array operations."""
    i, s = log.idx, log.step
    n, k = log.n.astype(np.float64), log.k.astype(np.float64)
    last = r.last[i]
    on_time = (last >= 0) & (s >= last)
    f = np.ones(len(i))
    late = (last >= 0) & ~on_time
    f[late] = discount ** (last[late] - s[late]).astype(np.float64)
    decay = np.ones(len(i))
    decay[on_time] = discount ** (s[on_time] - last[on_time]).astype(np.float64)
    succ, fail, weight = r.succ[i] * decay, r.fail[i] * decay, r.weight[i] * decay
    weighted = r.weighted[:, i] * decay
    row = on_time & (weight > 0)
    a, b = succ[row] + prior_alpha[i[row]], fail[row] + prior_beta[i[row]]
    dist = r.exposure[:, i[row]] - weighted[:, row] / weight[row]
    rows = np.column_stack([a / (a + b), dist.T, n[row], k[row]])
    r.succ[i] = succ + k * f
    r.fail[i] = fail + (n - k) * f
    r.weight[i] = weight + n * f
    r.weighted[:, i] = weighted + n * f * r.exposure[:, i]
    r.last[i] = np.maximum(last, s)
    mixed = log.sd > 0
    return rows.reshape(-1, 6), np.column_stack([i[mixed].astype(np.float64), log.sd[mixed]])


def fit_gains(rows: F64) -> F64 | None:
    """Logit gain per unit of each exposure distance, by binomial maximum likelihood."""
    if len(rows) < MIN_ROWS:
        return None
    base = np.clip(rows[:, 0], 0.01, 0.99)
    z0 = np.log(base / (1 - base))
    dist = rows[:, 1:4]
    n, k = rows[:, 4], rows[:, 5]
    scale = np.maximum(np.abs(dist).max(axis=0), 1e-9)  # gains in units the solver handles
    x = dist / scale

    def nll(c: F64) -> tuple[float, F64]:
        p = 1.0 / (1.0 + np.exp(-(z0 + x @ c)))
        ll = k * np.log(p + 1e-12) + (n - k) * np.log(1 - p + 1e-12)
        return -float(ll.sum()), -(x.T @ (k - n * p))

    bounds = [(0.0, MAX_GAIN * float(sc)) for sc in scale]
    res = minimize(nll, np.zeros(3), jac=True, method="L-BFGS-B", bounds=bounds)
    gains: F64 = np.asarray(res.x, dtype=np.float64) / scale
    return gains


@dataclass(frozen=True)
class Shifts:
    """Per-prompt logit shift as of `step`, and the evidence weight it was measured against."""

    shift: npt.NDArray[np.float32]
    weight: npt.NDArray[np.float32]
    step: int


def shifts(r: Replay, gains: F64, nb: I64, nb_sim: F64, discount: float) -> Shifts:
    """Gains times each prompt's distance, counting the last step's training as done."""
    done = Replay(
        r.exposure.copy(), r.succ, r.fail, r.weight, r.weighted, r.last, r.step, r.pending
    )
    _train(done, nb, nb_sim)
    seen = r.weight > 0
    dist = done.exposure - r.weighted / np.where(seen, r.weight, 1.0)
    shift = np.clip(np.where(seen, gains @ dist, 0.0), -MAX_SHIFT, MAX_SHIFT)
    # evidence weight discounted to `step`, so selection can tell how much came after this fit
    weight = np.where(seen, r.weight * discount ** np.maximum(r.step - r.last, 0), 0.0)
    return Shifts(shift.astype(np.float32), weight.astype(np.float32), r.step)


@dataclass
class Graph:
    """Each row's k nearest other rows by cosine, worked out only for rows that need them.

    Only prompts whose groups were mixed pass training on, so a run needs the rows of the
    prompts it trained on, not all: at 30,000 `ngrams` prompts every row costs about 2 ms
    and all of them a minute. scipy's sparse products hold the GIL, and this runs beside
    request handling, so rows go in blocks of about 500,000 / n (near 50 ms each). torch's
    sparse-sparse product releases it but took longer in all (116 s against 66 s).
    """

    unit: Any  # rows scaled to unit norm: CSR or dense float32
    unit_t: Any  # its transpose (exact rows), or that of its rare columns only (pruned rows)
    nb: I64  # (n, k); rows not filled in have similarity 0, so they pass nothing on
    sim: F64
    filled: npt.NDArray[np.bool_]
    pruned: bool = False

    @classmethod
    def of(cls, x: Any, k: int) -> Graph:
        if sp.issparse(x):
            m: Any = sp.csr_matrix(x, dtype=np.float32)
            norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
            m = sp.csr_matrix(sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ m)
            mt: Any = m.T.tocsr()
        else:
            d = np.asarray(x, dtype=np.float32)
            norms = np.linalg.norm(d, axis=1)
            m = d / np.where(norms > 0, norms, 1.0)[:, None]
            mt = m.T
        n = m.shape[0]
        k = max(min(k, n - 1), 0)
        return cls(m, mt, np.zeros((n, k), np.int64), np.zeros((n, k)), np.zeros(n, dtype=bool))

    @classmethod
    def pruned_of(cls, x: Any, k: int) -> Graph:
        """Rows found among the prompts sharing a rare column, re-ranked by exact cosine.

        An exact row scans every prompt sharing any column with it, which grows with the pool
        (about 2 ms a row at 30,000 `ngrams` prompts, 19 ms at 200,000). Candidates that share
        a column held by at most RARE_SHARE of the prompts (at least RARE_MIN), ranked by that
        part of the cosine, keep the cost per row about flat: the best CANDIDATES of them are
        scored exactly. Recall@10 against exact rows on sampled rows of real prompts and their
        renumbered variants (benchmarks/neighbours.py --sample): 0.95 at 30,000, 0.96 at
        1,000,000 (2.9 ms a row, where an exact row takes 62 ms).
        """
        m: Any = sp.csr_matrix(x, dtype=np.float32)
        norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
        if np.abs(norms[norms > 0] - 1.0).max(initial=0.0) > 1e-2:  # stored rows are unit
            m = sp.csr_matrix(sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ m)
        n = m.shape[0]
        df = np.bincount(m.indices, minlength=m.shape[1])
        rare = df <= max(RARE_MIN, RARE_SHARE * n)
        part = m.copy()
        part.data = part.data * rare[part.indices]
        part.eliminate_zeros()
        k = max(min(k, n - 1), 0)
        nb, sim = np.zeros((n, k), np.int64), np.zeros((n, k))
        return cls(m, part.T.tocsr(), nb, sim, np.zeros(n, dtype=bool), pruned=True)

    def fill(self, rows: I64, chunk: int | None = None, limit: int | None = None) -> None:
        """Work out these rows; with `limit`, at most that many, the latest in `rows` first."""
        todo = np.unique(rows[~self.filled[rows]])
        if limit is not None and len(todo) > limit:
            latest = rows[::-1][~self.filled[rows[::-1]]]
            _, first = np.unique(latest, return_index=True)
            todo = np.sort(latest[np.sort(first)[:limit]])
        n, k = self.nb.shape
        if k == 0 or not len(todo):
            self.filled[todo] = True
            return
        if self.pruned:
            self._fill_pruned(todo)
            return
        chunk = chunk or max(8, 500_000 // n)
        for lo in range(0, len(todo), chunk):
            part = todo[lo : lo + chunk]
            block = self.unit[part] @ self.unit_t
            dense = np.asarray(block.toarray() if sp.issparse(block) else block, np.float32)
            dense[np.arange(len(part)), part] = -np.inf  # not its own neighbour
            top = np.argpartition(-dense, k - 1, axis=1)[:, :k]
            self.nb[part] = top
            self.sim[part] = np.clip(np.take_along_axis(dense, top, axis=1), 0.0, 1.0)
        self.filled[todo] = True

    def _fill_pruned(self, todo: I64, chunk: int = 256) -> None:
        k = self.nb.shape[1]
        for lo in range(0, len(todo), chunk):
            part = todo[lo : lo + chunk]
            partial = (self.unit[part] @ self.unit_t).tocsr()
            for j, row in enumerate(part):
                a, b = partial.indptr[j], partial.indptr[j + 1]
                cols, vals = partial.indices[a:b], partial.data[a:b]
                keep = cols != row
                cols, vals = cols[keep], vals[keep]
                if len(cols) > CANDIDATES:
                    cols = cols[np.argpartition(-vals, CANDIDATES - 1)[:CANDIDATES]]
                exact = np.asarray((self.unit[cols] @ self.unit[row].T).todense()).ravel()
                top = np.argsort(-exact, kind="stable")[:k]
                self.nb[row, : len(top)] = cols[top]
                self.sim[row, : len(top)] = np.clip(exact[top], 0.0, 1.0)
            self.filled[part] = True


def shift_for(shifts: Shifts, idx: I64, evidence: F64, step: int, discount: float) -> F64:
    """Each prompt's shift, scaled down by the share of its evidence that came after the fit.

    Groups folded in since the fit were gathered closer to the current policy; treating them
    as unshifted is the cautious reading until the next fit replays them.
    """
    inside = idx < len(shifts.shift)
    out = np.zeros(len(idx))
    i = idx[inside]
    fitted = shifts.weight[i] * discount ** max(step - shifts.step, 0)
    now = evidence[inside]
    share = np.where(now > 0, np.minimum(fitted / np.where(now > 0, now, 1.0), 1.0), 0.0)
    out[inside] = shifts.shift[i] * share
    return out
