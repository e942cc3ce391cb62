"""Tiers from predicted pass rates: the first tier whose max_difficulty covers the query."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from service.predictions.schemas import PredictResponse
from service.routing.schemas import RoutedItem, RouteResponse, Tier, TierShare


def assign(difficulty: npt.NDArray[np.float64], tiers: list[Tier]) -> npt.NDArray[np.int64]:
    """Each item's tier index, or -1 when it is harder than every bounded tier."""
    bounds = np.array([1.0 if t.max_difficulty is None else t.max_difficulty for t in tiers])
    which = np.searchsorted(bounds, difficulty, side="left").astype(np.int64)
    which[which >= len(tiers)] = -1
    return which


def route(predicted: PredictResponse, tiers: list[Tier]) -> RouteResponse:
    """The prediction `/predict` answers, cut into tiers, with each tier's share and pass rate."""
    rate = np.array([p.pass_rate for p in predicted.items], dtype=np.float64)
    difficulty = 1.0 - rate
    which = assign(difficulty, tiers)
    n = len(rate)
    shares = []
    for t, tier in enumerate(tiers):
        mine = which == t
        count = int(mine.sum())
        shares.append(
            TierShare(
                name=tier.name,
                max_difficulty=tier.max_difficulty,
                count=count,
                share=count / n if n else 0.0,
                expected_pass_rate=float(rate[mine].mean()) if count else None,
            )
        )
    items = [
        RoutedItem(
            id=p.id,
            tier=tiers[w].name if w >= 0 else None,
            difficulty=float(d),
            pass_rate=p.pass_rate,
            uncertainty=p.uncertainty,
        )
        for p, w, d in zip(predicted.items, which.tolist(), difficulty, strict=True)
    ]
    return RouteResponse(
        model_version=predicted.model_version,
        items=items,
        tiers=shares,
        unrouted=int((which < 0).sum()),
    )
