"""`GET /runs/{run}/export`: checked in full before the first byte, then streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from service import estimates
from service.deps import ReadSessionDep, ScopeDep, StateDep
from service.export.formats import MEDIA_TYPES, Encoder, encoder
from service.export.schemas import ExportQuery
from service.export.service import Exporter
from service.models import Dataset
from service.policy import SelectionConfig
from service.runs import service as runs

router = APIRouter(prefix="/runs", tags=["export"])


@router.get(
    "/{run}/export",
    response_class=StreamingResponse,
    responses={200: {"content": {t: {} for t in MEDIA_TYPES.values()}}},
)
async def export_run(
    run: str,
    query: Annotated[ExportQuery, Query()],
    session: ReadSessionDep,
    scope: ScopeDep,
    state: StateDep,
) -> StreamingResponse:
    """Every prompt of the run's dataset with its estimate and counts, filtered and streamed."""
    query.check()
    r = await runs.get_by_name(session, scope, run)
    policy = SelectionConfig.model_validate(r.selection)
    dataset = await session.get_one(Dataset, r.dataset_id)
    view = await estimates.for_run(session, state.hot, state.predictor_cache, r, policy)
    exporter = Exporter(
        state.read_sessionmaker, view, r.group_size, dataset.id, dataset.prompt_count, query
    )
    enc = encoder(query.format, metadata=query.include_metadata, text=query.include_text)
    headers = {
        "Content-Disposition": f'attachment; filename="{r.name}.{query.format}"',
        "X-Depo-Prompts": str(dataset.prompt_count),
        "X-Depo-Model-Version": "" if view.version is None else str(view.version),
        "X-Depo-Step": str(view.step),
    }
    return StreamingResponse(
        _stream(exporter, enc), media_type=MEDIA_TYPES[query.format], headers=headers
    )


async def _stream(exporter: Exporter, enc: Encoder) -> AsyncIterator[bytes]:
    yield enc.header()
    async for chunk in exporter.chunks():
        yield enc.encode(chunk)
    yield enc.footer()
