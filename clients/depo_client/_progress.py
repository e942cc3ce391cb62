"""A progress bar on stderr: tqdm when it is installed, a one-line fallback otherwise."""

from __future__ import annotations

import importlib
import sys
import time
from types import TracebackType
from typing import Any, Self


class Progress:
    def __init__(self, total: int | None, desc: str, enabled: bool = True) -> None:
        self.total = total
        self.desc = desc
        self.enabled = enabled
        self.done = 0
        self._bar: Any = None
        self._last = 0.0
        self._started = time.monotonic()
        if not enabled:
            return
        try:
            tqdm: Any = importlib.import_module("tqdm.auto").tqdm
        except ImportError:
            return
        self._bar = tqdm(total=total, desc=desc, unit="prompt", file=sys.stderr, leave=True)

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last >= 0.2 or (self.total is not None and self.done >= self.total):
            self._last = now
            self._draw()

    def _draw(self) -> None:
        rate = self.done / max(time.monotonic() - self._started, 1e-9)
        if self.total:
            frac = min(self.done / self.total, 1.0)
            filled = int(frac * 30)
            bar = "#" * filled + "-" * (30 - filled)
            line = f"{self.desc}: [{bar}] {self.done}/{self.total} ({rate:,.0f}/s)"
        else:
            line = f"{self.desc}: {self.done} ({rate:,.0f}/s)"
        sys.stderr.write("\r" + line)
        sys.stderr.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
            return
        self._draw()
        sys.stderr.write("\n")
        sys.stderr.flush()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
