"""When and how long to wait before trying a request again.

Every endpoint the clients call is idempotent on the service (datasets and runs by name, prompts
by id, batches by (run, step, partition), outcomes by (batch, prompt)), so a POST whose answer was
lost can be sent again safely.
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass, field

import httpx

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded in attempts and in total time.

    `max_attempts` counts the first try; `deadline` (seconds) bounds the whole call including
    waits, so a trainer knows the longest a call can block: about `deadline + timeout`.
    """

    max_attempts: int = 6
    deadline: float = 60.0
    backoff: float = 0.25
    max_backoff: float = 8.0
    retry_statuses: frozenset[int] = field(default=RETRY_STATUSES)

    @classmethod
    def none(cls) -> RetryPolicy:
        """One try only: fail fast (used to probe a service known to be down)."""
        return cls(max_attempts=1, deadline=0.0)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to sleep after failed attempt number `attempt` (1-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_backoff)
        cap = min(self.max_backoff, self.backoff * (2 ** (attempt - 1)))
        return random.uniform(0.0, cap)


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The Retry-After header as seconds (either form the RFC allows), or None."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


class Attempts:
    """Book-keeping shared by the sync and async send loops."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.attempt = 0
        self.started = time.monotonic()

    def next_wait(self, retry_after: float | None = None) -> float | None:
        """Seconds to wait before another try, or None when the budget is spent."""
        if self.attempt >= self.policy.max_attempts:
            return None
        wait = self.policy.delay(self.attempt, retry_after)
        if time.monotonic() - self.started + wait > self.policy.deadline:
            return None
        return wait
