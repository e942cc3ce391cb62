"""Process-local copies of predictor data; each keyed by what makes it current."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.estimator import PredictorState
from service.estimator.exposure import Graph
from service.estimator.history import F64
from service.estimator.inputs import F32, DatasetInputs
from service.estimator.prior import Prior


@dataclass
class PredictorCache:
    """Process-local copies of what the database holds, keyed so they can't go stale."""

    priors: dict[int, Prior] = field(default_factory=dict)
    states: dict[int, tuple[int, PredictorState]] = field(default_factory=dict)
    inputs: dict[int, tuple[tuple[int, str], DatasetInputs]] = field(default_factory=dict)
    # a dataset's neighbour graph, current while its inputs object is the cached one
    graphs: dict[int, tuple[DatasetInputs, Graph]] = field(default_factory=dict)
    # a dataset's known difficulties by idx, keyed by (label_rev, prompt_count)
    labels: dict[int, tuple[tuple[int, int], F32 | None]] = field(default_factory=dict)
    # a run's `history_from` snapshot by prompt idx (successes, failures): written once
    histories: dict[int, tuple[F64, F64]] = field(default_factory=dict)
