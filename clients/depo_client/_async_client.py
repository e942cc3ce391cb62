"""`AsyncDepoClient`: the asyncio twin of `DepoClient`, method for method.

Kept in step with `_client.py` by hand; the differences are `await` and `asyncio.sleep`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self
from urllib.parse import quote

import httpx

from depo_client._base import (
    GroupsLike,
    PromptLike,
    Settings,
    batch_body,
    chunked,
    dataset_body,
    predict_bodies,
    results_json,
    run_body,
    sources,
    total_of,
)
from depo_client._curation import (
    ExportResult,
    ExportRow,
    Profile,
    Routing,
    TierLike,
    count_rows,
    expected_rows,
    export_format,
    export_params,
    profile_params,
    tiers_json,
)
from depo_client._exceptions import PayloadTooLarge, TransportError, error_from_response
from depo_client._models import (
    Batch,
    Dataset,
    DifficultyField,
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

    async def create_dataset(
        self,
        name: str,
        *,
        embedder: str | None = None,
        difficulty_field: DifficultyField | Mapping[str, Any] | None = None,
    ) -> Dataset:
        """Create a dataset, or return it when it exists with the same settings (else Conflict).

        `difficulty_field` names a numeric metadata field read as each prompt's known
        difficulty, e.g. `DifficultyField("level", easiest=1, hardest=5)`.
        """
        body = dataset_body(name, embedder, difficulty_field)
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
        init_from: str | None = None,
        history_from: str | None = None,
    ) -> Run:
        """Create a run, or return it when it exists with the same settings (else Conflict).

        `init_from`: start the predictor from that run's newest version. `history_from`:
        start each prompt's prior from that run's counts on the same dataset, at a weight
        learned from this run's outcomes (`Run.history`).
        """
        body = run_body(name, dataset, group_size, success_threshold, strategy, selection)
        body.update(sources(init_from, history_from))
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
        self,
        run: str,
        step: int,
        results: GroupsLike,
        batch_id: str | None = None,
        *,
        partition: str | int | None = None,
    ) -> OutcomeAck:
        """Record groups of rewards; a group counts once per (step, partition, prompt).

        With `batch_id` the step and partition are the batch's; without it, `step` and
        `partition` (the service's default "0"), so partitions that report the same prompt for
        the same step without batch ids each count.
        """
        body: dict[str, Any] = {"step": step, "results": results_json(results)}
        if batch_id is not None:
            body["batch_id"] = batch_id
        if partition is not None:
            body["partition"] = str(partition)
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

    async def route(
        self,
        run: str,
        tiers: Sequence[TierLike],
        *,
        prompt_ids: Sequence[str] | None = None,
        texts: Sequence[str] | None = None,
        step: int | None = None,
    ) -> Routing:
        """A tier per query by predicted difficulty (1 - pass rate), cheapest tier first.

        `tiers`: `[("small", 0.75), ("large", None)]` or `{"name", "max_difficulty"}` dicts;
        a query goes to the first tier whose `max_difficulty` it does not exceed. Raw texts go
        in chunks of `TEXTS_PER_REQUEST`; the shares are then over all of them. `step`, the
        trainer's, goes into the service's route log (one row per request it answers).
        """
        body_tiers = tiers_json(tiers)
        extra = {"tiers": body_tiers} if step is None else {"tiers": body_tiers, "step": step}
        parts = [
            await self.request("POST", f"/v1/runs/{run}/route", json={**body, **extra})
            for body in predict_bodies(prompt_ids, texts)
        ]
        return Routing.from_chunks(parts)

    async def profile(
        self, run: str, *, by: str | None = None, bins: int = 10, max_groups: int = 50
    ) -> Profile:
        """Histograms of the run's estimated and observed pass rates over its dataset, overall
        and per value of the metadata field `by` (the top `max_groups`, the rest in `other`)."""
        data = await self.request(
            "GET", f"/v1/runs/{run}/profile", params=profile_params(by, bins, max_groups)
        )
        return Profile.from_json(data)

    # -- export --------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _stream(self, path: str, params: Mapping[str, Any]) -> AsyncIterator[httpx.Response]:
        """A streamed GET, retried like `request` until the response starts."""
        attempts = Attempts(self._settings.retry)
        while True:
            attempts.attempt += 1
            try:
                async with self._http.stream(
                    "GET", path, params=params, timeout=self._settings.timeout
                ) as resp:
                    if resp.status_code in self._settings.retry.retry_statuses:
                        wait = attempts.next_wait(retry_after_seconds(resp))
                        if wait is not None:
                            await asyncio.sleep(wait)
                            continue
                    if not resp.is_success:
                        await resp.aread()
                        raise error_from_response(resp)
                    yield resp
                    return
            except httpx.TransportError as exc:
                wait = attempts.next_wait()
                if wait is None:
                    raise TransportError(
                        f"GET {self.base_url}{path} failed after {attempts.attempt} "
                        f"attempt(s): {exc!r}"
                    ) from exc
                await asyncio.sleep(wait)

    async def export(
        self,
        run: str,
        dest: str | os.PathLike[str] | IO[bytes],
        *,
        format: str | None = None,
        min_pass_rate: float | None = None,
        max_pass_rate: float | None = None,
        min_p_informative: float | None = None,
        seen: bool | None = None,
        limit: int | None = None,
        order_by: str | None = None,
        descending: bool = False,
        include_text: bool = False,
        include_metadata: bool = True,
        progress: bool = True,
    ) -> ExportResult:
        """Write the run's per-prompt estimates to a file (`jsonl`, `csv` or `parquet`).

        The format defaults to the file name's suffix. A path is written as `<path>.part` and
        renamed when the export is complete, so a cut connection never leaves a partial file.
        """
        target = Path(dest) if isinstance(dest, str | os.PathLike) else None
        fmt = export_format(target, format)
        params = export_params(
            fmt,
            min_pass_rate=min_pass_rate,
            max_pass_rate=max_pass_rate,
            min_p_informative=min_p_informative,
            seen=seen,
            limit=limit,
            order_by=order_by,
            descending=descending,
            include_text=include_text,
            include_metadata=include_metadata,
        )
        part = target.with_name(target.name + ".part") if target is not None else None
        written = rows = 0
        async with self._stream(f"/v1/runs/{run}/export", params) as resp:
            version = resp.headers.get("x-depo-model-version") or None
            with contextlib.ExitStack() as stack:
                out = stack.enter_context(part.open("wb")) if part is not None else dest
                assert not isinstance(out, str | os.PathLike)
                bar = stack.enter_context(
                    Progress(expected_rows(params, resp.headers), f"export {run}", progress)
                )
                async for data in resp.aiter_bytes():
                    out.write(data)
                    written += len(data)
                    n = count_rows(fmt, data)
                    rows += n
                    bar.update(n)
        if part is not None and target is not None:
            part.replace(target)
        return ExportResult(
            path=target,
            format=fmt,
            rows=None if fmt == "parquet" else rows - (1 if fmt == "csv" else 0),
            bytes=written,
            model_version=None if version is None else int(version),
        )

    async def export_rows(
        self,
        run: str,
        *,
        min_pass_rate: float | None = None,
        max_pass_rate: float | None = None,
        min_p_informative: float | None = None,
        seen: bool | None = None,
        limit: int | None = None,
        order_by: str | None = None,
        descending: bool = False,
        include_text: bool = False,
        include_metadata: bool = True,
    ) -> AsyncIterator[ExportRow]:
        """The export as rows, parsed as they stream in (memory stays flat on both sides)."""
        params = export_params(
            "jsonl",
            min_pass_rate=min_pass_rate,
            max_pass_rate=max_pass_rate,
            min_p_informative=min_p_informative,
            seen=seen,
            limit=limit,
            order_by=order_by,
            descending=descending,
            include_text=include_text,
            include_metadata=include_metadata,
        )
        async with self._stream(f"/v1/runs/{run}/export", params) as resp:
            async for line in resp.aiter_lines():
                if line:
                    yield ExportRow.from_line(line)
