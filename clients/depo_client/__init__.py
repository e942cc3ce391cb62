"""Thin client for the depo service: informative GRPO batches in, rollout outcomes out.

from depo_client import DepoClient, Curriculum

depo = DepoClient("http://127.0.0.1:8000")
curriculum = Curriculum(depo, "my-run", prompts={"p0": "1 + 1 = ?", ...})
for step in range(steps):
    prompts = curriculum.batch(step, size=64)
    ...
    curriculum.report(step, {p.id: rewards_of(p) for p in prompts})
"""

from depo_client._async_client import AsyncDepoClient
from depo_client._base import TEXTS_PER_REQUEST
from depo_client._client import DepoClient
from depo_client._curation import (
    ExportResult,
    ExportRow,
    Profile,
    ProfileGroup,
    RoutedItem,
    Routing,
    TierShare,
)
from depo_client._exceptions import (
    UNREACHABLE,
    APIError,
    BadRequest,
    Conflict,
    DepoError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    TransportError,
    Unauthorized,
)
from depo_client._fallback import Curriculum
from depo_client._models import (
    Batch,
    BatchStats,
    Dataset,
    DifficultyField,
    Estimate,
    GroupResult,
    HistogramBin,
    HistoryEntry,
    OutcomeAck,
    Prediction,
    Predictions,
    PredictorInfo,
    Prompt,
    PromptStats,
    Run,
    RunHistory,
    ServedPrompt,
    StepShare,
    Summary,
    UploadResult,
)
from depo_client._retry import RetryPolicy
from depo_client._spool import Spool

__version__ = "0.1.0"

__all__ = [
    "TEXTS_PER_REQUEST",
    "UNREACHABLE",
    "APIError",
    "AsyncDepoClient",
    "BadRequest",
    "Batch",
    "BatchStats",
    "Conflict",
    "Curriculum",
    "Dataset",
    "DepoClient",
    "DepoError",
    "DifficultyField",
    "Estimate",
    "ExportResult",
    "ExportRow",
    "GroupResult",
    "HistogramBin",
    "HistoryEntry",
    "InvalidRequest",
    "NotFound",
    "OutcomeAck",
    "PayloadTooLarge",
    "Prediction",
    "Predictions",
    "PredictorInfo",
    "Profile",
    "ProfileGroup",
    "Prompt",
    "PromptStats",
    "RetryPolicy",
    "RoutedItem",
    "Routing",
    "Run",
    "RunHistory",
    "ServedPrompt",
    "ServiceUnavailable",
    "Spool",
    "StepShare",
    "Summary",
    "TierShare",
    "TransportError",
    "Unauthorized",
    "UploadResult",
    "__version__",
]
