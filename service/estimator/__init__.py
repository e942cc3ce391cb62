"""Pure-compute difficulty predictor: embed prompts, fit pass rates, predict (no I/O)."""

from .embedders import (
    EMBEDDER_NAMES,
    ClientEmbedder,
    Embedder,
    HashingEmbedder,
    HybridEmbedder,
    MiniLMEmbedder,
    combine_hybrid,
    get_embedder,
    l2_normalise,
)
from .features import FEATURE_NAMES, N_FEATURES, text_features
from .inputs import input_blocks, model_inputs
from .model import (
    FitConfig,
    PredictorState,
    fit,
    predict,
    predict_logit,
    predict_logprob,
    warmup,
)

__all__ = [
    "EMBEDDER_NAMES",
    "FEATURE_NAMES",
    "N_FEATURES",
    "ClientEmbedder",
    "Embedder",
    "FitConfig",
    "HashingEmbedder",
    "HybridEmbedder",
    "MiniLMEmbedder",
    "PredictorState",
    "combine_hybrid",
    "fit",
    "get_embedder",
    "input_blocks",
    "l2_normalise",
    "model_inputs",
    "predict",
    "predict_logit",
    "predict_logprob",
    "text_features",
    "warmup",
]
