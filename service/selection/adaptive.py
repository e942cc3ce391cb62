"""Selection settings a run leaves unset, derived from what the service sees at each batch.

A user who sets nothing gets these; each says what it is derived from and why.
"""

from __future__ import annotations

import math

# Candidates scored for one batch at most. Scoring is one hot-store read and a vectorised
# posterior per candidate; at 8,192 a batch stays within the service-time budget at any pool
# size (docs/benchmarks.md, `make bench`).
SCAN_CAP = 8192
MIN_PER_SLOT = 4.0  # a batch always chooses among at least 4 candidates per slot


def scored_scan(free: int, size: int) -> int:
    """Candidates a scoring strategy scans: the whole free pool, up to SCAN_CAP.

    Scanning everything re-ranks every prompt at every step, so a prompt whose group just came
    out mixed can be served again at the next step instead of a whole epoch later, and one the
    policy has since solved drops out at once. Below the cap's share of a large pool, the epoch
    order still brings every prompt round.
    """
    return min(free, max(math.ceil(MIN_PER_SLOT * size), min(free, SCAN_CAP)))
