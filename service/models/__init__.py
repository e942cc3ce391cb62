"""Every table, importing only `service.db`: domains use tables without importing each other."""

from service.models.batches import Batch, BatchItem
from service.models.datasets import Dataset, Prompt
from service.models.history import RunHistory
from service.models.keys import ApiKey
from service.models.outcomes import Outcome
from service.models.predictor import PredictorVersion
from service.models.routing import RouteLog
from service.models.runs import Run

__all__ = [
    "ApiKey",
    "Batch",
    "BatchItem",
    "Dataset",
    "Outcome",
    "PredictorVersion",
    "Prompt",
    "RouteLog",
    "Run",
    "RunHistory",
]
