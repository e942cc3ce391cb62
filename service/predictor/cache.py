"""Process-local copies of predictor data; each keyed by what makes it current."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from service.estimator import PredictorState
from service.estimator.sparse import Matrix
from service.predictor.exposure import Graph, Shifts

F32 = npt.NDArray[np.float32]


@dataclass
class DatasetInputs:
    """A dataset's model inputs by dense idx; rows not embedded yet are absent from `mask`.

    `x` is CSR for sparse embedders; `column_weights` then holds their idf over the dataset.
    """

    x: Matrix
    mask: npt.NDArray[np.bool_]
    column_weights: F32 | None = None


@dataclass(frozen=True)
class Prior:
    """What selection needs from a version: rates per prompt idx and the served-prompt drift."""

    version: int
    rates: F32
    drift: float
    strength: float | None = None
    tracked: Shifts | None = None  # per-prompt training since its evidence (tracking)


@dataclass
class PredictorCache:
    """Process-local copies of what the database holds, keyed so they can't go stale."""

    priors: dict[int, Prior] = field(default_factory=dict)
    states: dict[int, tuple[int, PredictorState]] = field(default_factory=dict)
    inputs: dict[int, tuple[tuple[int, str], DatasetInputs]] = field(default_factory=dict)
    # a dataset's neighbour graph, current while its inputs object is the cached one
    graphs: dict[int, tuple[DatasetInputs, Graph]] = field(default_factory=dict)
