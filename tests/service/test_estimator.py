"""Fast tests of the pure-compute difficulty predictor (service.estimator)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import spearmanr

from service.estimator import (
    N_FEATURES,
    ClientEmbedder,
    FitConfig,
    HashingEmbedder,
    PredictorState,
    fit,
    get_embedder,
    input_blocks,
    model_inputs,
    predict,
    predict_logprob,
    text_features,
)

TEXTS = [
    "What is $2+2$?",
    "Prove that $\\sum_{k=1}^{n} k^3 = \\left(\\frac{n(n+1)}{2}\\right)^2$ for all $n$.",
    "How many positive integers less than 1000 are divisible by 7 but not by 11?",
    "",
]


def _synthetic(n: int = 3000, d: int = 40, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Rows whose pass rate is a logistic function of two columns, observed as groups of 8."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    p = 1.0 / (1.0 + np.exp(-(1.5 * x[:, 0] - 1.0 * x[:, 1])))
    trials = np.full(n, 8, dtype=np.float32)
    succ = rng.binomial(8, p).astype(np.float32)
    return x, succ, trials, p


def test_hashing_embedder_deterministic_normalised_chunk_safe() -> None:
    emb = HashingEmbedder()
    a = emb.embed(TEXTS)
    assert a.shape == (len(TEXTS), emb.dim) and a.dtype == np.float32
    norms = np.linalg.norm(a[:3], axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
    assert np.all(np.isfinite(a))
    # Stateless: another instance, and embedding one text at a time, give the same vectors.
    b = np.vstack([HashingEmbedder().embed([t]) for t in TEXTS])
    np.testing.assert_array_equal(a, b)
    assert emb.embed([]).shape == (0, emb.dim)


def test_get_embedder_and_client() -> None:
    assert get_embedder("hashing").name == "hashing"
    assert get_embedder("minilm").dim == 384
    assert get_embedder("hybrid").dim == HashingEmbedder().dim + 384
    client = get_embedder("client", dim=16)
    assert isinstance(client, ClientEmbedder) and client.dim == 16
    with pytest.raises(RuntimeError):
        client.embed(["x"])
    with pytest.raises(ValueError):
        get_embedder("nope")


def test_minilm_embedder_small() -> None:
    emb = get_embedder("minilm")
    a = emb.embed(TEXTS[:3])
    assert a.shape == (3, 384) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(emb.embed(TEXTS[:1])[0], a[0], atol=1e-5)


def test_ngrams_minilm_embedder_keeps_both_blocks() -> None:
    emb = get_embedder("ngrams-minilm")
    both = emb.embed(TEXTS[:3])
    grams, minilm = get_embedder("ngrams").embed(TEXTS[:3]), get_embedder("minilm").embed(TEXTS[:3])
    assert sp.isspmatrix_csr(both) and both.shape == (3, 2**18 + 384) == (3, emb.dim)
    np.testing.assert_allclose(both[:, : 2**18].toarray(), grams.toarray(), atol=1e-6)
    np.testing.assert_allclose(both[:, 2**18 :].toarray(), minilm, atol=1e-5)
    assert both.has_sorted_indices


def test_text_features_shape_and_signal() -> None:
    f = text_features(TEXTS)
    assert f.shape[0] == len(TEXTS) and f.dtype == np.float32
    assert np.all(np.isfinite(f))
    assert f[1, 0] > f[0, 0]  # log length grows with length


@pytest.mark.parametrize("ranking_weight", [0.0, 3.0])
def test_fit_learns_signal_and_beats_constant(ranking_weight: float) -> None:
    x, s, t, p = _synthetic()
    tr, te = slice(0, 2400), slice(2400, None)
    cfg = FitConfig(blocks=(x.shape[1],), block_gains=(1.0,))
    state = fit(x[tr], s[tr], t[tr], ranking_weight=ranking_weight, config=cfg)
    pred = predict(state, x[te])
    assert pred.shape == (600,) and np.all((pred > 0) & (pred < 1))
    assert spearmanr(pred, p[te])[0] > 0.5

    def constant_predict(xx: np.ndarray) -> np.ndarray:
        return np.full(xx.shape[0], s[tr].sum() / t[tr].sum())

    # The same assertion must fail for a constant predictor (Spearman is NaN/0 for it).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = spearmanr(constant_predict(x[te]), p[te])[0]
    assert not (rho > 0.5)


def test_default_blocks_with_text_features() -> None:
    rng = np.random.default_rng(1)
    emb = HashingEmbedder(dim=64).embed([f"problem {i} " * (1 + i % 7) for i in range(300)])
    feats = text_features([f"problem {i} " * (1 + i % 7) for i in range(300)])
    x = np.hstack([emb, feats])
    p = 1.0 / (1.0 + np.exp(feats[:, 0] - feats[:, 0].mean()))
    s = rng.binomial(8, p).astype(np.float32)
    state = fit(x, s, np.full(300, 8.0, np.float32))
    assert spearmanr(predict(state, x), p)[0] > 0.5


def test_round_trip_bytes_identical_predictions() -> None:
    x, s, t, _ = _synthetic(n=500, d=10)
    lp = np.where(np.arange(500) % 3 == 0, np.nan, -x[:, 0]).astype(np.float32)
    for hidden in (0, 8):
        cfg = FitConfig(hidden=hidden, blocks=(10,), block_gains=(1.0,))
        state = fit(x, s, t, logprob=lp, config=cfg)
        blob = state.to_bytes()
        assert isinstance(blob, bytes)
        back = PredictorState.from_bytes(blob)
        np.testing.assert_array_equal(predict(state, x), predict(back, x))
        np.testing.assert_array_equal(predict_logprob(state, x), predict_logprob(back, x))
        assert back.meta == state.meta


def test_logprob_head_learns_where_given() -> None:
    x, s, t, _ = _synthetic(n=1000, d=10)
    lp = (-2.0 + 0.5 * x[:, 3]).astype(np.float32)
    lp[::4] = np.nan
    cfg = FitConfig(hidden=0, blocks=(10,), block_gains=(1.0,))
    state = fit(x, s, t, logprob=lp, config=cfg)
    ok = np.isfinite(lp)
    assert np.corrcoef(predict_logprob(state, x)[ok], lp[ok])[0, 1] > 0.9


def test_warm_start_changes_little() -> None:
    x, s, t, _ = _synthetic()
    cfg = FitConfig(blocks=(x.shape[1],), block_gains=(1.0,))
    first = fit(x, s, t, config=cfg)
    again = fit(x, s, t, config=cfg, init=first)
    diff = np.abs(predict(first, x) - predict(again, x)).max()
    assert diff < 0.02


def test_weights_and_validation() -> None:
    x, s, t, _ = _synthetic(n=200, d=5)
    cfg = FitConfig(blocks=(5,), block_gains=(1.0,))
    fit(x, s, t, weights=np.linspace(0.1, 1.0, 200), config=cfg)
    with pytest.raises(ValueError):
        fit(x, t + 1, t, config=cfg)
    state = fit(x, s, t, config=cfg)
    with pytest.raises(ValueError):
        predict(state, x[:, :4])


def test_model_inputs_and_blocks() -> None:
    emb = HashingEmbedder().embed(TEXTS)
    x = model_inputs(emb, TEXTS)
    assert x.shape == (len(TEXTS), emb.shape[1] + N_FEATURES) and x.dtype == np.float32
    assert not model_inputs(emb, None)[:, -N_FEATURES:].any()
    assert input_blocks("hashing", emb.shape[1]) == (emb.shape[1], N_FEATURES)
    assert input_blocks("hybrid", emb.shape[1] + 384) == (emb.shape[1], 384, N_FEATURES)
    assert input_blocks("ngrams-minilm", 2**18 + 384) == (2**18, 384, N_FEATURES)
    with pytest.raises(ValueError, match="ngrams-minilm embeddings must have width"):
        input_blocks("ngrams-minilm", emb.shape[1] + 384)
    with pytest.raises(ValueError):
        model_inputs(emb, TEXTS[:2])


def test_duplicate_rows_are_merged_without_changing_the_fit() -> None:
    x, s, t, _ = _synthetic(n=400, d=10)
    cfg = FitConfig(blocks=(10,), block_gains=(1.0,), ranking_weight=0.0)
    once = fit(x, s, t, ranking_weight=0.0, config=cfg)
    # Same prompts seen in two groups each: pooled counts are what the loss sees.
    twice = fit(
        np.vstack([x, x]),
        np.concatenate([s, s]),
        np.concatenate([t, t]),
        ranking_weight=0.0,
        config=cfg,
    )
    assert twice.meta["n_unique_rows"] == 400 and twice.meta["n_rows"] == 800
    np.testing.assert_allclose(predict(once, x), predict(twice, x), atol=1e-3)


def test_sparse_inputs_fit_and_predict_like_the_same_rows_dense() -> None:
    """The CSR path (centring folded into an offset, custom matmul) is the dense fit, sparse."""
    import scipy.sparse as sp

    rng = np.random.default_rng(3)
    x, s, t, p = _synthetic(n=600, d=30)
    x = np.where(rng.random(x.shape) < 0.7, 0.0, x).astype(np.float32)  # mostly zeros
    lp = np.where(np.arange(600) % 2 == 0, np.nan, -x[:, 0]).astype(np.float32)
    weights = rng.uniform(1.0, 3.0, 30)
    # strongly convex, run to convergence: both paths must reach the same optimum
    cfg = FitConfig(
        blocks=(25, 5), column_weights=weights, l2=1e-2, ranking_weight=0.0, max_iter=2000
    )
    dense = fit(x, s, t, logprob=lp, config=cfg, max_seconds=30.0)
    sparse = fit(sp.csr_matrix(x), s, t, logprob=lp, config=cfg, max_seconds=30.0)
    np.testing.assert_allclose(sparse.scale, dense.scale, rtol=1e-5)
    np.testing.assert_allclose(sparse.mean, dense.mean, atol=1e-6)
    for xx in (x, sp.csr_matrix(x)):
        np.testing.assert_allclose(predict(sparse, xx), predict(dense, x), atol=5e-3)
        np.testing.assert_allclose(
            predict_logprob(sparse, xx), predict_logprob(dense, x), atol=0.02
        )
    assert spearmanr(predict(sparse, sp.csr_matrix(x)), p)[0] > 0.5


@pytest.mark.parametrize("outputs", [None, 1])
def test_scaled_csr_layer_matches_a_dense_layer_and_its_gradient(outputs: int | None) -> None:
    """Forward and backward of the sparse first layer, against torch on standardised rows."""
    import scipy.sparse as sp
    import torch

    from service.estimator.sparse import ScaledCsr

    rng = np.random.default_rng(0)
    x = np.where(rng.random((50, 12)) < 0.6, 0.0, rng.random((50, 12))).astype(np.float32)
    mean, scale = x.mean(0), rng.uniform(0.5, 2.0, 12).astype(np.float32)
    layer = torch.nn.Linear(12, 3)
    g = torch.from_numpy(rng.standard_normal((50, 3)).astype(np.float32))
    k = 3 if outputs is None else outputs
    out = ScaledCsr(sp.csr_matrix(x), mean, scale, outputs=outputs).linear(layer)
    (out * g).sum().backward()  # type: ignore[no-untyped-call]
    grad = layer.weight.grad.clone()  # type: ignore[union-attr]
    layer.weight.grad = None
    ref = layer(torch.from_numpy((x - mean) / scale))
    (ref[:, :k] * g[:, :k]).sum().backward()  # type: ignore[no-untyped-call]
    np.testing.assert_allclose(out[:, :k].detach().numpy(), ref[:, :k].detach().numpy(), atol=1e-5)
    assert torch.all(out[:, k:] == 0)  # heads not asked for read as zero
    np.testing.assert_allclose(grad.numpy(), layer.weight.grad.numpy(), atol=1e-4)  # type: ignore[union-attr]


def test_ngrams_embedder_is_sparse_stateless_and_keeps_rare_ngrams() -> None:
    emb = get_embedder("ngrams")
    m = emb.embed(TEXTS)
    assert m.shape == (4, 2**18) and m.format == "csr" and m.dtype == np.float32
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    np.testing.assert_allclose(norms[:3], 1.0, rtol=1e-5)
    assert norms[3] == 0.0  # the empty text
    assert (emb.embed(TEXTS[1:2]) != m[1]).nnz == 0  # no state: chunking changes nothing
    assert 20 < m[1].nnz < 200  # word 1-3 grams: the sum's LaTeX tokens, not 2,048 buckets
    x = model_inputs(m, TEXTS)
    assert x.shape == (4, 2**18 + N_FEATURES) and x.format == "csr"


def test_text_features_fast_paths_match_their_definitions() -> None:
    """ASCII counts in C and one keyword scan give what the per-character definitions give."""
    from service.estimator.features import FEATURE_NAMES

    texts = ["How Many AREAS: 12 of 3?", "Ünï ²³ ΑΒΓ How many", "PROVE it. Show That!", ""]
    f = text_features(texts)
    col = {name: i for i, name in enumerate(FEATURE_NAMES)}
    for row, text in zip(f, texts, strict=True):
        n = max(len(text), 1)
        assert row[col["digit_share"]] == pytest.approx(sum(c.isdigit() for c in text) / n)
        assert row[col["upper_share"]] == pytest.approx(sum(c.isupper() for c in text) / n)
        assert row[col["non_ascii_share"]] == pytest.approx(sum(ord(c) > 127 for c in text) / n)
    assert [list(f[:, col[f"kw_{k}"]]) for k in ("count", "geom", "prove")] == [
        [1.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0],  # "AREAS": area must end a word
        [0.0, 0.0, 1.0, 0.0],
    ]


def test_sparse_fit_gives_a_constant_feature_no_weight() -> None:
    """A text feature constant over the training rows (a shared template) must stay inert."""
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    x, s, t, _ = _synthetic(n=4000, d=30)
    x[:, -1] = 9.75  # e.g. the same suffix on every prompt
    w = np.where(np.arange(4000) % 7 == 0, 2.0, 1.0).astype(np.float32)
    cfg = FitConfig(blocks=(25, 5), ranking_weight=0.0)
    dense = fit(x, s, t, w, config=cfg)
    sparse = fit(sp.csr_matrix(x), s, t, w, config=cfg)
    np.testing.assert_allclose(sparse.scale[-1], dense.scale[-1], rtol=1e-5)
    moved = x.copy()
    moved[:, -1] = 10.0 + rng.random(len(x))  # new prompts without the template
    np.testing.assert_allclose(
        predict(sparse, sp.csr_matrix(moved)), predict(sparse, sp.csr_matrix(x)), atol=1e-3
    )


def test_the_mixed_classifier_learns_from_text_and_from_known_difficulty() -> None:
    """Fails if it ignores the inputs, or a label that says which prompts are extreme."""
    from sklearn.metrics import roc_auc_score

    from service.estimator.features import N_FEATURES
    from service.estimator.mixed import fit_predict

    rng = np.random.default_rng(0)
    n, d = 4000, 64
    x = rng.normal(size=(n, d + N_FEATURES)).astype(np.float32)
    text_says = x[:, 0] > 0  # one embedding direction tells mixed prompts
    label = np.where(rng.random(n) < 0.5, rng.normal(0, 0.3, n), rng.choice([-4.0, 4.0], n))
    label[rng.random(n) < 0.2] = np.nan  # unlabelled
    extreme = np.abs(np.nan_to_num(label, nan=0.0)) > 2
    y = (text_says & ~extreme).astype(np.int64)
    train, test = np.arange(3000), np.arange(3000, n)
    plain = fit_predict(x[train], y[train], x[test])
    both = fit_predict(x[train], y[train], x[test], label[train], label[test])
    assert plain is not None and both is not None
    auc_plain = roc_auc_score(y[test], plain)
    auc_both = roc_auc_score(y[test], both)
    assert auc_plain > 0.7, auc_plain
    assert auc_both > auc_plain + 0.05, (auc_plain, auc_both)
