"""Difficulty predictor: a small torch model on [embedding || text features] -> pass rate."""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .sparse import (
    Matrix,
    ScaledCsr,
    as_inputs,
    dense_columns,
    is_sparse,
    weighted_moments,
)

FORMAT_VERSION = 1
_EPS = 1e-6
_INNER = 5  # L-BFGS iterations between time checks


@dataclass
class FitConfig:
    """Hyper-parameters of `fit`; defaults are the measured best on DeepScaleR cold start."""

    hidden: int = 0
    l2: float = 1e-4
    l2_per_ranking_weight: float = 1e-3
    blocks: tuple[int, ...] | None = None
    block_gains: tuple[float, ...] | None = None
    column_weights: np.ndarray | None = None  # e.g. idf: multiplies columns before scaling
    feature_gain: float = 0.45
    recalibrate: bool = True
    ranking_weight: float = 3.0
    ranking_margin: float = 0.5
    ranking_min_gap: float = 0.05
    pairs_per_row: int = 4
    logprob_weight: float = 1.0
    max_iter: int = 500
    max_seconds: float = 4.0
    seed: int = 0
    num_threads: int = 2


@dataclass
class PredictorState:
    """Everything `predict` needs, as plain numpy arrays plus JSON-able metadata."""

    mean: np.ndarray
    scale: np.ndarray
    weights: list[np.ndarray]
    biases: list[np.ndarray]
    logprob_mean: float = 0.0
    logprob_scale: float = 1.0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        """Input width the state was fitted on."""
        return int(self.mean.shape[0])

    @property
    def hidden(self) -> int:
        """Width of the hidden layer (0 for the linear model)."""
        return int(self.weights[0].shape[1]) if len(self.weights) == 2 else 0

    def to_bytes(self) -> bytes:
        """Serialise with numpy's npz (no pickle) so versions can live in a database blob."""
        arrays: dict[str, np.ndarray] = {"mean": self.mean, "scale": self.scale}
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            arrays[f"w{i}"] = w
            arrays[f"b{i}"] = b
        header = {
            "format_version": FORMAT_VERSION,
            "n_layers": len(self.weights),
            "logprob_mean": self.logprob_mean,
            "logprob_scale": self.logprob_scale,
            "meta": self.meta,
        }
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> PredictorState:
        """Inverse of `to_bytes`; refuses unknown format versions."""
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            header = json.loads(bytes(z["header"]).decode())
            if header.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"unsupported predictor format {header.get('format_version')}")
            n = int(header["n_layers"])
            return cls(
                mean=z["mean"].copy(),
                scale=z["scale"].copy(),
                weights=[z[f"w{i}"].copy() for i in range(n)],
                biases=[z[f"b{i}"].copy() for i in range(n)],
                logprob_mean=float(header["logprob_mean"]),
                logprob_scale=float(header["logprob_scale"]),
                meta=dict(header["meta"]),
            )


def _first_layer(state: PredictorState, cols: slice) -> tuple[np.ndarray, np.ndarray]:
    """Fold the standardisation into the first layer: avoids an (n, d) temporary."""
    w = state.weights[0][:, cols]
    w0 = np.ascontiguousarray(w / state.scale[:, None], dtype=np.float32)
    b0 = (state.biases[0][cols] - (state.mean / state.scale) @ w).astype(np.float32)
    return w0, b0


def _outputs(state: PredictorState, x: np.ndarray, out: int) -> np.ndarray:
    """Return output column `out` (0 = pass logit, 1 = standardised logprob)."""
    x = as_inputs(x)
    if x.ndim != 2 or x.shape[1] != state.dim:
        raise ValueError(f"expected (n, {state.dim}) input, got {x.shape}")
    if len(state.weights) == 1:
        w0, b0 = _first_layer(state, slice(out, out + 1))
        return np.asarray(x @ w0[:, 0] + b0[0], dtype=np.float32)  # matvec: memory-bound
    w0, b0 = _first_layer(state, slice(None))
    h = np.maximum(x @ w0 + b0, 0.0)
    return np.asarray(h @ state.weights[1][:, out] + state.biases[1][out], dtype=np.float32)


def predict(state: PredictorState, x: np.ndarray) -> np.ndarray:
    """Predicted pass rates in (0, 1), one per row of x."""
    logit = np.clip(_outputs(state, x, 0), -30.0, 30.0)
    out: np.ndarray = (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
    return out


def predict_logit(state: PredictorState, x: np.ndarray) -> np.ndarray:
    """Pass-rate logits (useful for ranking and blending)."""
    return _outputs(state, x, 0)


def predict_logprob(state: PredictorState, x: np.ndarray) -> np.ndarray:
    """Predicted mean log-probability from the distillation head."""
    z = _outputs(state, x, 1)
    return (z * state.logprob_scale + state.logprob_mean).astype(np.float32)


def default_blocks(dim: int) -> tuple[int, ...]:
    """Assume [embedding || text features] when the caller does not say."""
    from .features import N_FEATURES

    return (dim - N_FEATURES, N_FEATURES) if dim > N_FEATURES else (dim,)


def _default_gains(blocks: tuple[int, ...], feature_gain: float) -> tuple[float, ...]:
    """Embedding blocks get unit total variance; the trailing text-feature block less."""
    if len(blocks) == 1:
        return (1.0,)
    return (*(1.0 for _ in blocks[:-1]), feature_gain)


def platt(
    logit: np.ndarray, s: np.ndarray, t: np.ndarray, w: np.ndarray, iters: int = 25
) -> tuple[float, float]:
    """Fit sigmoid(a * logit + b) to the binomial outcomes by Newton's method.

    The ranking hinge stretches logits apart; this restores calibration without
    changing the order of predictions (a stays positive).
    """
    z = logit.astype(np.float64)
    s64, f64 = (w * s).astype(np.float64), (w * (t - s)).astype(np.float64)
    n64 = s64 + f64
    a, b = 1.0, 0.0
    for _ in range(iters):
        q = 1.0 / (1.0 + np.exp(-np.clip(a * z + b, -30, 30)))
        r = s64 - n64 * q
        h = n64 * q * (1 - q) + 1e-9
        grad = np.array([r @ z, r.sum()])
        hess = np.array([[h @ (z * z), h @ z], [h @ z, h.sum()]]) + 1e-6 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        a, b = a + float(step[0]), b + float(step[1])
        if abs(step).max() < 1e-8:
            break
    if not np.isfinite(a) or a <= 0:
        return 1.0, 0.0
    return a, b


def _weighted_moments(
    x: np.ndarray, w: np.ndarray, chunk: int = 8192
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted column mean and variance in row chunks (no (n, d) temporaries)."""
    wn = w.astype(np.float64) / float(w.sum())
    mean = np.zeros(x.shape[1], dtype=np.float64)
    for i in range(0, x.shape[0], chunk):
        mean += wn[i : i + chunk] @ x[i : i + chunk]
    var = np.zeros(x.shape[1], dtype=np.float64)
    m32 = mean.astype(np.float32)
    for i in range(0, x.shape[0], chunk):
        var += wn[i : i + chunk] @ np.square(x[i : i + chunk] - m32)
    return m32, var


def standardisation(
    x: Matrix,
    w: np.ndarray,
    blocks: tuple[int, ...],
    gains: tuple[float, ...],
    column_weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Centre columns; give each block total variance gain**2 (the last block per column).

    Embedding blocks keep their geometry (one scalar each) because per-column scaling
    amplifies noise directions; the heterogeneous text-feature block is z-scored per column.
    Column weights (idf for sparse n-grams) multiply columns first and end up in the scale.
    """
    if sum(blocks) != x.shape[1] or len(gains) != len(blocks):
        raise ValueError(f"blocks {blocks} / gains {gains} do not match width {x.shape[1]}")
    if is_sparse(x):
        mean, var = weighted_moments(x, w)
        if len(blocks) > 1:
            # the per-column block needs exact variances: one-pass E[x^2] - mean^2 leaves
            # rounding noise on a constant column, which would then get a near-zero scale
            last = slice(x.shape[1] - blocks[-1], None)
            mean[last], var[last] = _weighted_moments(dense_columns(x, last), w)
    else:
        mean, var = _weighted_moments(x, w)
    cw = np.ones(x.shape[1]) if column_weights is None else np.asarray(column_weights, np.float64)
    if cw.shape != (x.shape[1],) or not np.all(cw > 0):
        raise ValueError("column weights must be positive, one per column")
    var = var * cw * cw
    scale = np.ones(x.shape[1], dtype=np.float64)
    start = 0
    for k, (size, gain) in enumerate(zip(blocks, gains, strict=True)):
        sl = slice(start, start + size)
        if k == len(blocks) - 1 and len(blocks) > 1:
            col = np.sqrt(np.maximum(var[sl], _EPS**2)) * np.sqrt(size)
            scale[sl] = np.where(var[sl] > _EPS**2, col, 1.0) / gain
        else:
            scale[sl] = np.sqrt(max(float(var[sl].sum()), _EPS**2)) / gain
        start += size
    return mean, (scale / cw).astype(np.float32)


def _sample_pairs(
    rates: np.ndarray, cfg: FitConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Sample index pairs (i harder than j) whose observed rates differ by at least min_gap."""
    n = rates.shape[0]
    m = max(n * cfg.pairs_per_row, 1)
    i = rng.integers(0, n, size=m)
    j = rng.integers(0, n, size=m)
    gap = rates[j] - rates[i]
    keep = np.abs(gap) >= cfg.ranking_min_gap
    i, j, gap = i[keep], j[keep], gap[keep]
    lo = np.where(gap > 0, i, j)
    hi = np.where(gap > 0, j, i)
    return lo, hi


class _Net(torch.nn.Module):
    """Linear or one-hidden-layer MLP with two outputs: pass logit and logprob."""

    def __init__(self, dim: int, hidden: int) -> None:
        """Create the layers; hidden=0 means a linear model."""
        super().__init__()
        self.layers = torch.nn.ModuleList()
        if hidden > 0:
            self.layers.append(torch.nn.Linear(dim, hidden))
            self.layers.append(torch.nn.Linear(hidden, 2))
        else:
            self.layers.append(torch.nn.Linear(dim, 2))

    def forward(self, x: torch.Tensor | ScaledCsr) -> torch.Tensor:
        """Apply the layers with ReLU between them."""
        first = self.layers[0]
        assert isinstance(first, torch.nn.Linear)
        h: torch.Tensor = x.linear(first) if isinstance(x, ScaledCsr) else first(x)
        if len(self.layers) == 2:
            h = self.layers[1](torch.relu(h))
        return h


def _init_net(net: _Net, init: PredictorState | None, rates_logit: float) -> None:
    """Warm-start from a previous state, or start the bias at the mean logit."""
    with torch.no_grad():
        if init is not None:
            for layer, w, b in zip(net.layers, init.weights, init.biases, strict=True):
                assert isinstance(layer, torch.nn.Linear)
                layer.weight.copy_(torch.from_numpy(w.T.copy()))
                layer.bias.copy_(torch.from_numpy(b.copy()))
            return
        last = net.layers[-1]
        assert isinstance(last, torch.nn.Linear)
        if len(net.layers) == 1:
            last.weight.zero_()
        last.bias.zero_()
        last.bias[0] = rates_logit


def _merge_duplicates(
    x: np.ndarray, s: np.ndarray, t: np.ndarray, w: np.ndarray, logprob: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Pool outcomes of identical rows (same prompt, many groups): same loss, fewer rows.

    The weighted binomial likelihood only depends on sum(w*s) and sum(w*t) per row, and
    refits are memory-bound on x, so this makes repeated prompts nearly free.
    """
    rng = np.random.default_rng(12345)
    key = x @ rng.standard_normal((x.shape[1], 2)).astype(np.float32)
    _, first, inv = np.unique(key, axis=0, return_index=True, return_inverse=True)
    if first.shape[0] == x.shape[0]:
        return x, s, t, w, logprob
    inv = inv.ravel()
    m = first.shape[0]
    w_agg = np.bincount(inv, weights=w, minlength=m)
    safe = np.maximum(w_agg, 1e-12)
    s_agg = (np.bincount(inv, weights=w * s, minlength=m) / safe).astype(np.float32)
    t_agg = (np.bincount(inv, weights=w * t, minlength=m) / safe).astype(np.float32)
    lp_agg = None
    if logprob is not None:
        lp = np.asarray(logprob, dtype=np.float64)
        ok = np.isfinite(lp)
        num = np.bincount(inv, weights=np.where(ok, lp, 0.0) * w, minlength=m)
        den = np.bincount(inv, weights=ok * w, minlength=m)
        lp_agg = np.where(den > 0, num / np.maximum(den, 1e-12), np.nan).astype(np.float32)
    s_agg = np.minimum(s_agg, t_agg)
    return x[first], s_agg, t_agg, w_agg.astype(np.float32), lp_agg


def warmup() -> None:
    """Pay torch's one-off lazy imports (about 1 s) at service start, not in the first refit."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    fit(
        x,
        np.ones(64, np.float32),
        np.full(64, 2.0, np.float32),
        max_seconds=1.0,
        config=FitConfig(blocks=(4,), block_gains=(1.0,)),
    )


def fit(
    x: np.ndarray,
    successes: np.ndarray,
    trials: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    init: PredictorState | None = None,
    ranking_weight: float | None = None,
    logprob: np.ndarray | None = None,
    seed: int = 0,
    max_seconds: float = 4.0,
    config: FitConfig | None = None,
) -> PredictorState:
    """Fit pass rates by binomial likelihood + DEPO's pairwise ranking hinge (+ logprob head)."""
    base = config if config is not None else FitConfig()
    cfg = FitConfig(
        **{
            **base.__dict__,
            "ranking_weight": base.ranking_weight if ranking_weight is None else ranking_weight,
            "seed": seed,
            "max_seconds": max_seconds,
        }
    )
    t0 = time.perf_counter()
    x = as_inputs(x)
    s = np.asarray(successes, dtype=np.float32)
    t = np.asarray(trials, dtype=np.float32)
    if x.ndim != 2 or s.shape != (x.shape[0],) or t.shape != s.shape:
        raise ValueError("x must be (n, d) and successes/trials (n,)")
    if np.any(t <= 0) or np.any(s < 0) or np.any(s > t):
        raise ValueError("need 0 <= successes <= trials and trials > 0")
    w = np.ones_like(s) if weights is None else np.asarray(weights, dtype=np.float32)
    if w.shape != s.shape or np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError("weights must be finite, non-negative, (n,) and not all zero")
    if init is not None and (init.dim != x.shape[1] or init.hidden != cfg.hidden):
        init = None  # shapes changed (new embedder or config): refit from scratch
    n_outcomes = int(x.shape[0])
    x, s, t, w, logprob = _merge_duplicates(x, s, t, w, logprob)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.num_threads)
    try:
        state = _fit_torch(x, s, t, w, init, logprob, cfg, rng, t0)
    finally:
        torch.set_num_threads(prev_threads)
    state.meta.update(
        {
            "n_rows": n_outcomes,
            "n_unique_rows": int(x.shape[0]),
            "fit_seconds": round(time.perf_counter() - t0, 3),
        }
    )
    return state


@dataclass
class _Targets:
    """What the loss compares against: counts, weights, ranking pairs, the logprob head's target."""

    s: torch.Tensor
    t: torch.Tensor
    w: torch.Tensor
    denom: float
    lo: torch.Tensor
    hi: torch.Tensor
    pair_w: torch.Tensor
    lp_mask: torch.Tensor | None = None
    lp: torch.Tensor | None = None
    lp_mean: float = 0.0
    lp_scale: float = 1.0


def _fit_torch(
    x: np.ndarray,
    s: np.ndarray,
    t: np.ndarray,
    w: np.ndarray,
    init: PredictorState | None,
    logprob: np.ndarray | None,
    cfg: FitConfig,
    rng: np.random.Generator,
    t0: float,
) -> PredictorState:
    """Run full-batch L-BFGS on the combined loss until converged or out of time."""
    mean, scale, xs = _scaled_inputs(x, w, init, logprob, cfg)
    pooled = float((w * s).sum() / max(float((w * t).sum()), _EPS))
    pooled = min(max(pooled, 1e-3), 1 - 1e-3)
    net = _Net(x.shape[1], cfg.hidden)
    _init_net(net, init, float(np.log(pooled / (1 - pooled))))
    targets = _targets(s, t, w, logprob, cfg, rng)
    # The hinge is linear in the weights, so it needs more shrinkage (measured: w=3 wants 3e-3).
    l2 = cfg.l2 + cfg.ranking_weight * cfg.l2_per_ranking_weight
    steps = _minimise(net, xs, targets, cfg, l2, t0)
    a, b = _recalibrate(net, xs, s, t, w, cfg)
    lin = [layer for layer in net.layers if isinstance(layer, torch.nn.Linear)]
    return PredictorState(
        mean=mean.astype(np.float32),
        scale=scale.astype(np.float32),
        weights=[layer.weight.detach().numpy().T.astype(np.float32).copy() for layer in lin],
        biases=[layer.bias.detach().numpy().astype(np.float32).copy() for layer in lin],
        logprob_mean=targets.lp_mean,
        logprob_scale=targets.lp_scale,
        meta={
            "format_version": FORMAT_VERSION,
            "hidden": cfg.hidden,
            "l2": l2,
            "ranking_weight": cfg.ranking_weight,
            "lbfgs_steps": steps,
            "platt": [a, b],
        },
    )


def _scaled_inputs(
    x: np.ndarray,
    w: np.ndarray,
    init: PredictorState | None,
    logprob: np.ndarray | None,
    cfg: FitConfig,
) -> tuple[np.ndarray, np.ndarray, torch.Tensor | ScaledCsr]:
    """Standardised inputs; a warm start keeps its predecessor's scaling so weights carry over."""
    if init is not None:
        mean, scale = init.mean, init.scale
    else:
        blocks = cfg.blocks or default_blocks(x.shape[1])
        gains = cfg.block_gains or _default_gains(blocks, cfg.feature_gain)
        mean, scale = standardisation(x, w, blocks, gains, cfg.column_weights)
    xs: torch.Tensor | ScaledCsr
    if is_sparse(x):
        heads = 2 if logprob is not None and np.isfinite(logprob).any() else 1
        xs = ScaledCsr(x, mean, scale, outputs=heads if cfg.hidden == 0 else None)
    else:
        xs = torch.from_numpy(x).sub(torch.from_numpy(mean)).div_(torch.from_numpy(scale))
    return mean, scale, xs


def _targets(
    s: np.ndarray,
    t: np.ndarray,
    w: np.ndarray,
    logprob: np.ndarray | None,
    cfg: FitConfig,
    rng: np.random.Generator,
) -> _Targets:
    lo, hi = _sample_pairs(s / t, cfg, rng)
    out = _Targets(
        s=torch.from_numpy(s),
        t=torch.from_numpy(t),
        w=torch.from_numpy(w),
        denom=float((w * t).sum()),
        lo=torch.from_numpy(lo),
        hi=torch.from_numpy(hi),
        pair_w=torch.from_numpy(0.5 * (w[lo] + w[hi])),
    )
    if logprob is not None:
        lp = np.asarray(logprob, dtype=np.float32)
        finite = np.isfinite(lp)
        if finite.any():
            out.lp_mean = float(lp[finite].mean())
            out.lp_scale = float(lp[finite].std()) or 1.0
            out.lp_mask = torch.from_numpy(finite)
            out.lp = torch.from_numpy(np.where(finite, (lp - out.lp_mean) / out.lp_scale, 0.0))
    return out


def _minimise(
    net: _Net,
    xs: torch.Tensor | ScaledCsr,
    tg: _Targets,
    cfg: FitConfig,
    l2: float,
    t0: float,
) -> int:
    """L-BFGS steps on the loss until converged or out of time; how many steps it took."""
    decay = [layer.weight for layer in net.layers if isinstance(layer, torch.nn.Linear)]
    opt = torch.optim.LBFGS(
        list(net.parameters()),
        lr=1.0,
        # sparse evaluations are slow enough that 20 iterations would overrun the time check
        max_iter=_INNER if isinstance(xs, ScaledCsr) else 20,
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-6,
        tolerance_change=1e-9,
    )

    def closure() -> torch.Tensor:
        """Compute the full-batch loss and its gradient."""
        opt.zero_grad()
        out = net(xs)
        logit = out[:, 0]
        nll = -(
            tg.s * torch.nn.functional.logsigmoid(logit)
            + (tg.t - tg.s) * torch.nn.functional.logsigmoid(-logit)
        )
        loss = (tg.w * nll).sum() / tg.denom
        if cfg.ranking_weight > 0 and tg.lo.numel() > 0:
            hinge = torch.relu(cfg.ranking_margin - (logit[tg.hi] - logit[tg.lo]))
            pairs = (tg.pair_w * hinge).sum() / tg.pair_w.sum().clamp_min(_EPS)
            loss = loss + cfg.ranking_weight * pairs
        if tg.lp_mask is not None and tg.lp is not None and cfg.logprob_weight > 0:
            err = torch.where(tg.lp_mask, out[:, 1] - tg.lp, torch.zeros_like(tg.lp))
            loss = loss + cfg.logprob_weight * err.square().sum() / tg.lp_mask.sum()
        loss = loss + l2 * sum(p.square().sum() for p in decay)
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    steps = 0
    prev = float("inf")
    step_time = 0.0
    # Stop before a step would overrun the budget (keep 10% for recalibration and copy-out),
    # but always take one: a process's first fit pays torch's lazy imports (seconds on a
    # loaded machine) inside the budget, and a fit with no step is the constant predictor.
    while steps == 0 or (
        steps * _INNER < cfg.max_iter
        and time.perf_counter() - t0 + step_time < 0.9 * cfg.max_seconds
    ):
        t_step = time.perf_counter()
        loss = float(opt.step(closure).detach())  # type: ignore[no-untyped-call]
        step_time = time.perf_counter() - t_step
        steps += 1
        if abs(prev - loss) < 1e-7 * max(1.0, abs(loss)):
            break
        prev = loss
    return steps


def _recalibrate(
    net: _Net,
    xs: torch.Tensor | ScaledCsr,
    s: np.ndarray,
    t: np.ndarray,
    w: np.ndarray,
    cfg: FitConfig,
) -> tuple[float, float]:
    """Platt-rescale the rate head after a ranking loss bent its scale; the (a, b) applied."""
    if not (cfg.recalibrate and cfg.ranking_weight > 0):
        return 1.0, 0.0
    with torch.no_grad():
        logit = net(xs)[:, 0].numpy()
    a, b = platt(logit, s, t, w)
    last = [layer for layer in net.layers if isinstance(layer, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight[0].mul_(a)
        last.bias[0] = a * last.bias[0] + b
    return a, b
