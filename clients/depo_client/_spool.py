"""A durable, ordered queue of outcome reports that could not be delivered yet.

One JSON object per line: `{"run", "body"}` where `body` is the exact `POST .../outcomes` body,
with its original `step` and `batch_id`. An entry leaves the file only after the service
acknowledged it with a 2xx; a crash between the ack and the removal re-sends it, and the
service's idempotency (per batch and prompt, or step and prompt) counts it once.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: one process per spool file, please
    fcntl = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    run: str
    body: dict[str, Any]


class Spool:
    """Safe to share between threads, and between processes on one host (an flock guards it)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock, open(self.path.with_name(self.path.name + ".lock"), "a") as lockfile:
            if fcntl is not None:
                fcntl.flock(lockfile.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                if fcntl is not None:
                    fcntl.flock(lockfile.fileno(), fcntl.LOCK_UN)

    def append(self, run: str, body: Mapping[str, Any]) -> None:
        line = json.dumps({"run": run, "body": dict(body)}, separators=(",", ":"))
        with self._locked(), open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def entries(self) -> list[SpoolEntry]:
        with self._locked():
            return self._read()

    def __len__(self) -> int:
        return len(self.entries())

    def _read(self) -> list[SpoolEntry]:
        if not self.path.exists():
            return []
        out: list[SpoolEntry] = []
        with open(self.path, encoding="utf-8") as f:
            for raw in f:
                raw = raw.strip()
                if not raw:
                    continue
                try:
                    item = json.loads(raw)
                except ValueError:  # a torn last line from a crash mid-append: it was never acked
                    continue
                out.append(SpoolEntry(str(item["run"]), dict(item["body"])))
        return out

    def _write(self, entries: list[SpoolEntry]) -> None:
        if not entries:
            self.path.unlink(missing_ok=True)
            return
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for e in entries:
                f.write(json.dumps({"run": e.run, "body": e.body}, separators=(",", ":")) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def drain(self, send: Callable[[SpoolEntry], None]) -> int:
        """Send entries oldest first, removing each after `send` returns; stop at the first
        exception (re-raised) so order is kept. Returns how many were delivered."""
        delivered = 0
        if not self.path.exists():
            return 0
        with self._locked():
            pending = self._read()
            while pending:
                send(pending[0])
                pending = pending[1:]
                self._write(pending)
                delivered += 1
        return delivered
