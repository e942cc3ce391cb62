"""`Curriculum`: what a training loop holds so that the service can never stop it.

Healthy, it is a thin layer over `DepoClient.next_batch` and `DepoClient.report`. When the
service is unreachable (after the client's bounded retries), `batch` falls back to seeded uniform
sampling from a local copy of the dataset and `report` appends to a local JSONL spool; both log a
warning and return. On the next call that reaches the service, the spool is replayed first, oldest
first, each entry with its original step and batch_id, and removed only after the 2xx, so the
service's idempotency keeps every group counted exactly once.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from depo_client._base import GroupsLike, PromptLike, prompt_json, results_json
from depo_client._client import DepoClient
from depo_client._exceptions import UNREACHABLE, APIError, DepoError
from depo_client._models import BatchStats, OutcomeAck, ServedPrompt
from depo_client._retry import RetryPolicy
from depo_client._spool import Spool, SpoolEntry

log = logging.getLogger("depo_client")

_SERVED_MEMORY = 4096


class Curriculum:
    """Batches from the service, or from a local uniform sampler while it is unreachable.

    Parameters
    ----------
    client: a `DepoClient`; its retry policy bounds how long one call waits for a service that
        is down before falling back (or pass `retry=`).
    run: the run's name (create it first with `client.create_run`).
    prompts: the local copy of the run's dataset: `{id: text}`, `(id, text)` pairs or
        `{"id", "text"}` mappings. Sorted by id, so every rank that holds the same prompts draws
        the same fallback batch for a step.
    partition: which batch of a step this caller asks for (see the service's `partition`).
    seed: seeds the fallback sampler together with the step.
    spool_path: where undelivered reports wait; defaults to
        `$DEPO_SPOOL_DIR/<run>.<partition>.rank<RANK>.jsonl` (`DEPO_SPOOL_DIR` defaults to
        `.depo/spool`, `RANK` to 0). Entries left by an earlier process are replayed too.
    probe_interval: while degraded, probe the service at most this often (seconds); calls in
        between fall back at once instead of paying a timeout each.
    probe_timeout: the timeout of a probe (one `GET /readyz`, no retries) while degraded; once
        it answers 200, the call goes on with the client's normal retries.
    """

    def __init__(
        self,
        client: DepoClient,
        run: str,
        prompts: Mapping[str, str] | Iterable[PromptLike],
        *,
        partition: str | int = "0",
        seed: int = 0,
        spool_path: str | os.PathLike[str] | None = None,
        retry: RetryPolicy | None = None,
        probe_interval: float = 10.0,
        probe_timeout: float = 5.0,
    ) -> None:
        self.run = run
        self.partition = str(partition)
        self.seed = seed
        items = (
            [(str(k), str(v)) for k, v in prompts.items()]
            if isinstance(prompts, Mapping)
            else [(d["id"], d["text"]) for d in map(prompt_json, prompts)]
        )
        self._pool = sorted(dict(items).items())
        if not self._pool:
            raise ValueError("Curriculum needs the local copy of the dataset's prompts")
        if spool_path is None:
            spool_dir = Path(os.environ.get("DEPO_SPOOL_DIR", ".depo/spool"))
            rank = os.environ.get("RANK", "0")  # one file per process under torchrun/accelerate
            spool_path = spool_dir / f"{run}.{self.partition}.rank{rank}.jsonl"
        self.spool = Spool(spool_path)
        self._client = client.with_options(retry=retry) if retry is not None else client
        self._probe = client.with_options(retry=RetryPolicy.none(), timeout=probe_timeout)
        self.probe_interval = probe_interval
        self._degraded_since: float | None = None
        self._last_probe = 0.0
        self._served: OrderedDict[int, str | None] = OrderedDict()
        self._stats: OrderedDict[int, BatchStats] = OrderedDict()
        self._lock = threading.RLock()
        self.fallback_batches = 0
        self.spooled_reports = 0
        self.replayed_reports = 0
        self.rejected_reports = 0

    # -- public ---------------------------------------------------------------------------------

    @property
    def degraded(self) -> bool:
        """True while the last contact with the service failed."""
        return self._degraded_since is not None

    def batch(self, step: int, size: int) -> list[ServedPrompt]:
        """The prompts for `step`: served by the service, or drawn locally when it is down."""
        with self._lock:
            client = self._try_client()
            if client is not None:
                try:
                    self._replay(client)
                    served = client.next_batch(self.run, step, size, self.partition)
                except UNREACHABLE as exc:
                    self._degrade(exc, f"step {step}: batch drawn locally")
                else:
                    self._recovered()
                    self._remember(step, served.batch_id, served.stats)
                    return list(served.prompts)
            self.fallback_batches += 1
            self._remember(step, None)
            return self.fallback_batch(step, size)

    def report(
        self, step: int, groups: GroupsLike, *, batch_id: str | None = None
    ) -> OutcomeAck | None:
        """Record the groups of `step`. Returns the ack, or None when the report was spooled."""
        body: dict[str, Any] = {"step": step, "results": results_json(groups)}
        if not body["results"]:
            return OutcomeAck(0, 0)
        bid = batch_id if batch_id is not None else self._served.get(step)
        if bid is not None:
            body["batch_id"] = bid
        else:  # drawn locally: the group counts once per (step, this partition, prompt)
            body["partition"] = self.partition
        with self._lock:
            client = self._try_client()
            if client is not None:
                try:
                    self._replay(client)
                    ack = client.report_json(self.run, body)
                except UNREACHABLE as exc:
                    self._degrade(exc, f"step {step}: outcomes spooled to {self.spool.path}")
                else:
                    self._recovered()
                    return ack
            self.spool.append(self.run, body)
            self.spooled_reports += 1
            return None

    def flush(self) -> int:
        """Replay the spool now; returns how many reports were delivered (0 when unreachable)."""
        with self._lock:
            before = self.replayed_reports
            if self.degraded and not self._probe.healthy():
                return 0
            try:
                self._replay(self._client)
            except UNREACHABLE as exc:
                self._degrade(exc, "spool kept for later")
                return self.replayed_reports - before
            self._recovered()
            return self.replayed_reports - before

    def batch_id(self, step: int) -> str | None:
        """The service's batch id for a recent step; None when it was drawn locally."""
        return self._served.get(step)

    def batch_stats(self, step: int) -> BatchStats | None:
        """The service's stats of a recent step's batch; None when it was drawn locally."""
        return self._stats.get(step)

    @property
    def client(self) -> DepoClient:
        """The client this curriculum talks through (the adapters read run figures with it)."""
        return self._client

    @property
    def pending(self) -> int:
        """Reports waiting in the spool."""
        return len(self.spool)

    def fallback_batch(self, step: int, size: int) -> list[ServedPrompt]:
        """The local draw for a step: uniform without replacement, the same on every rank."""
        rng = random.Random(f"depo:{self.seed}:{self.partition}:{step}")
        n = len(self._pool)
        picks = rng.sample(range(n), size) if size <= n else rng.choices(range(n), k=size)
        return [ServedPrompt(self._pool[i][0], self._pool[i][1], None) for i in picks]

    def close(self) -> None:
        """Try once to deliver what is spooled; what is left stays on disk for the next start."""
        try:
            self.flush()
        except DepoError:
            log.exception(
                "depo: could not flush the outcome spool; it stays at %s", self.spool.path
            )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------------

    def _try_client(self) -> DepoClient | None:
        """The client to use now, or None to skip the service (degraded, between probes)."""
        if self._degraded_since is None:
            return self._client
        now = time.monotonic()
        if now - self._last_probe < self.probe_interval:
            return None
        self._last_probe = now
        if self._probe.healthy():  # one GET /readyz within probe_timeout
            return self._client
        log.debug("depo still unreachable (probe of %s failed)", self._client.base_url)
        return None

    def _replay(self, client: DepoClient) -> None:
        def send(entry: SpoolEntry) -> None:
            try:
                ack = client.report_json(entry.run, entry.body)
            except UNREACHABLE:
                raise
            except APIError as exc:  # the service will never take it: keep it aside, go on
                self.rejected_reports += 1
                rejected = Spool(self.spool.path.with_suffix(".rejected.jsonl"))
                rejected.append(entry.run, {**entry.body, "error": str(exc)})
                log.error("depo: spooled report rejected (%s); moved to %s", exc, rejected.path)
                return
            self.replayed_reports += 1
            log.debug("depo: replayed step %s: %s", entry.body.get("step"), ack)

        self.spool.drain(send)

    def _degrade(self, exc: BaseException, what: str) -> None:
        if self._degraded_since is None:
            self._degraded_since = time.monotonic()
            log.warning(
                "depo service at %s unreachable (%s); training goes on with local uniform "
                "batches and spooled outcomes (%s)",
                self._client.base_url,
                exc,
                what,
            )
        else:
            log.debug("depo still unreachable: %s", what)
        self._last_probe = time.monotonic()

    def _recovered(self) -> None:
        if self._degraded_since is not None:
            log.warning(
                "depo service back after %.1fs; %d spooled report(s) replayed so far",
                time.monotonic() - self._degraded_since,
                self.replayed_reports,
            )
            self._degraded_since = None

    def _remember(self, step: int, batch_id: str | None, stats: BatchStats | None = None) -> None:
        self._served[step] = batch_id
        self._served.move_to_end(step)
        while len(self._served) > _SERVED_MEMORY:
            self._served.popitem(last=False)
        self._stats.pop(step, None)
        if stats is not None:
            self._stats[step] = stats
            while len(self._stats) > _SERVED_MEMORY:
                self._stats.popitem(last=False)
