"""`AsyncDepoClient`: the asyncio twin of `DepoClient`, method for method.

Kept in step with `_client.py` by hand; the differences are `await` and `asyncio.sleep`.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx

from depo_client._base import (
    GroupsLike,
    PromptLike,
    Settings,
    batch_body,
    chunked,
    predict_bodies,
    results_json,
    run_body,
    total_of,
)
from depo_client._exceptions import PayloadTooLarge, TransportError, error_from_response
from depo_client._models import (
    Batch,
    Dataset,
    OutcomeAck,
    Predictions,
    PredictorInfo,
    Prompt,
    PromptStats,
    Run,
    Summary,
    UploadResult,
)
from depo_client._progress import Progress
from depo_client._retry import Attempts, RetryPolicy, retry_after_seconds

log = logging.getLogger("depo_client")


class AsyncDepoClient:
    """Talk to a depo service.

    >>> async with AsyncDepoClient("http://127.0.0.1:8000", api_key="...") as depo:
    ...     batch = await depo.next_batch("my-run", step=0, size=64)

    `base_url` and `api_key` default to DEPO_URL and DEPO_API_KEY. Transient failures
    (connection errors, timeouts, 429, 5xx) are retried per `retry`; what outlives the retries
    raises `TransportError` or `ServiceUnavailable`.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._settings = Settings(base_url, api_key, timeout, retry, headers)
        self._http = httpx.AsyncClient(
            base_url=self._settings.base_url,
            headers=self._settings.headers,
            timeout=self._settings.timeout,
            transport=transport,
        )
        self._owns_http = True

    @property
    def base_url(self) -> str:
        return self._settings.base_url

    @property
    def retry(self) -> RetryPolicy:
        return self._settings.retry

    def with_options(
        self, *, retry: RetryPolicy | None = None, timeout: float | httpx.Timeout | None = None
    ) -> Self:
        """A view of this client with other retry or timeout settings, sharing its connections."""
        other = copy.copy(self)
        other._settings = copy.copy(self._settings)
        if retry is not None:
            other._settings.retry = retry
        if timeout is not None:
            other._settings.timeout = httpx.Timeout(timeout)
        other._owns_http = False
        return other

    # -- plumbing ------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send one request with retries; return the decoded JSON body or raise a `DepoError`."""
        attempts = Attempts(self._settings.retry)
        while True:
            attempts.attempt += 1
            try:
                resp = await self._http.request(
                    method, path, json=json, params=params, timeout=self._settings.timeout
                )
            except httpx.TransportError as exc:
                wait = attempts.next_wait()
                if wait is None:
                    raise TransportError(
                        f"{method} {self.base_url}{path} failed after {attempts.attempt} "
                        f"attempt(s): {exc!r}"
                    ) from exc
                log.debug("%s %s: %r; retrying in %.2fs", method, path, exc, wait)
                await asyncio.sleep(wait)
                continue
            if resp.status_code in self._settings.retry.retry_statuses:
                wait = attempts.next_wait(retry_after_seconds(resp))
                if wait is not None:
                    log.debug("%s %s: %d; retrying in %.2fs", method, path, resp.status_code, wait)
                    await asyncio.sleep(wait)
                    continue
            if resp.is_success:
                return resp.json()
            raise error_from_response(resp)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- health --------------------------------------------------------------------------------

    async def healthy(self) -> bool:
        """True when /readyz answers 200 (one try, no retries)."""
        try:
            return (
                await self._http.get("/readyz", timeout=self._settings.timeout)
            ).status_code == 200
        except httpx.TransportError:
            return False

    # -- datasets ------------------------------------------------------------------------------

    async def create_dataset(self, name: str, *, embedder: str | None = None) -> Dataset:
        """Create a dataset, or return it when it exists with the same settings (else Conflict)."""
        body: dict[str, Any] = {"name": name}
        if embedder is not None:
            body["embedder"] = embedder
        return Dataset.from_json(await self.request("POST", "/v1/datasets", json=body))

    async def get_dataset(self, name: str) -> Dataset:
        return Dataset.from_json(await self.request("GET", f"/v1/datasets/{name}"))

    async def upload_prompts(
        self,
        dataset: str,
        prompts: Iterable[PromptLike],
        *,
        chunk_size: int = 5000,
        progress: bool = True,
    ) -> UploadResult:
        """Upsert prompts by id in chunks; unchanged texts are no-ops, so re-running is cheap."""
        total = UploadResult(0, 0, 0, 0)
        with Progress(total_of(prompts), f"upload {dataset}", progress) as bar:
            for chunk in chunked(prompts, chunk_size):
                total = total + await self._upload_chunk(dataset, chunk)
                bar.update(len(chunk))
        return total

    async def _upload_chunk(self, dataset: str, chunk: list[dict[str, Any]]) -> UploadResult:
        try:
            data = await self.request(
                "POST", f"/v1/datasets/{dataset}/prompts", json={"prompts": chunk}
            )
        except PayloadTooLarge:
            if len(chunk) == 1:
                raise
            half = len(chunk) // 2
            first = await self._upload_chunk(dataset, chunk[:half])
            return first + await self._upload_chunk(dataset, chunk[half:])
        return UploadResult.from_json(data)

    async def get_prompt(self, dataset: str, prompt_id: str) -> Prompt:
        return Prompt.from_json(
            await self.request("GET", f"/v1/datasets/{dataset}/prompts/{quote(prompt_id, safe='')}")
        )

    # -- runs ----------------------------------------------------------------------------------

    async def create_run(
        self,
        name: str,
        dataset: str,
        group_size: int,
        *,
        success_threshold: float | None = None,
        strategy: str | None = None,
        selection: Mapping[str, Any] | None = None,
    ) -> Run:
        """Create a run, or return it when it exists with the same settings (else Conflict)."""
        body = run_body(name, dataset, group_size, success_threshold, strategy, selection)
        return Run.from_json(await self.request("POST", "/v1/runs", json=body))

    async def get_run(self, name: str) -> Run:
        return Run.from_json(await self.request("GET", f"/v1/runs/{name}"))

    async def next_batch(
        self,
        run: str,
        step: int,
        size: int,
        partition: str | int = "0",
        *,
        strategy: str | None = None,
    ) -> Batch:
        """The batch for (run, step, partition): the same one for every retry and every rank."""
        body = batch_body(step, size, partition, strategy)
        return Batch.from_json(await self.request("POST", f"/v1/runs/{run}/batches", json=body))

    async def report(
        self, run: str, step: int, results: GroupsLike, batch_id: str | None = None
    ) -> OutcomeAck:
        """Record groups of rewards; a group already recorded for this batch (or step) is a
        duplicate and counted once."""
        body: dict[str, Any] = {"step": step, "results": results_json(results)}
        if batch_id is not None:
            body["batch_id"] = batch_id
        return OutcomeAck.from_json(
            await self.request("POST", f"/v1/runs/{run}/outcomes", json=body)
        )

    async def report_json(self, run: str, body: Mapping[str, Any]) -> OutcomeAck:
        """Send an outcome body as is (the spool replays these)."""
        return OutcomeAck.from_json(
            await self.request("POST", f"/v1/runs/{run}/outcomes", json=dict(body))
        )

    async def prompt_stats(self, run: str, prompt_id: str) -> PromptStats:
        return PromptStats.from_json(
            await self.request("GET", f"/v1/runs/{run}/prompts/{quote(prompt_id, safe='')}")
        )

    async def predict(
        self,
        run: str,
        *,
        prompt_ids: Sequence[str] | None = None,
        texts: Sequence[str] | None = None,
    ) -> Predictions:
        """Estimates for stored prompts (with their history) or for raw texts (the model alone).

        Raw texts go in chunks of `TEXTS_PER_REQUEST`, the most a transformer embedder takes.
        """
        parts = [
            await self.request("POST", f"/v1/runs/{run}/predict", json=body)
            for body in predict_bodies(prompt_ids, texts)
        ]
        return Predictions.from_chunks(parts)

    async def predictor(self, run: str) -> PredictorInfo:
        """The run's newest predictor version, what it learned from, and its calibration."""
        return PredictorInfo.from_json(await self.request("GET", f"/v1/runs/{run}/predictor"))

    async def summary(self, run: str, *, bins: int = 10, last_steps: int = 1000) -> Summary:
        data = await self.request(
            "GET", f"/v1/runs/{run}/summary", params={"bins": bins, "last_steps": last_steps}
        )
        return Summary.from_json(data)
