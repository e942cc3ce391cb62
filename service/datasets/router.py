"""HTTP surface of datasets and their prompts."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from service.datasets import service
from service.datasets.schemas import (
    DatasetCreate,
    DatasetRead,
    DifficultyField,
    PromptRead,
    PromptUpload,
    UploadResult,
)
from service.deps import ReadSessionDep, ScopeDep, SessionDep, StateDep
from service.embedding import embedded_count
from service.exceptions import PayloadTooLarge
from service.models import Dataset
from service.openapi import errors
from service.state import AppState

router = APIRouter(prefix="/datasets", tags=["datasets"])


async def _read(session: AsyncSession, d: Dataset) -> DatasetRead:
    return DatasetRead(
        name=d.name,
        embedder=d.embedder,
        prompt_count=d.prompt_count,
        embedded=await embedded_count(session, d),
        labelled=await service.labelled_count(session, d),
        difficulty_field=(
            DifficultyField.model_validate(d.difficulty_field) if d.difficulty_field else None
        ),
        created_at=d.created_at,
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetRead,
    responses={200: {"model": DatasetRead, "description": "it existed already"}, **errors(409)},
)
async def create_dataset(
    body: DatasetCreate, session: SessionDep, scope: ScopeDep, response: Response
) -> DatasetRead:
    dataset, created = await service.create(session, scope, body)
    if not created:
        response.status_code = status.HTTP_200_OK
    return await _read(session, dataset)


@router.get("/{dataset}", response_model=DatasetRead)
async def get_dataset(dataset: str, session: ReadSessionDep, scope: ScopeDep) -> DatasetRead:
    return await _read(session, await service.get_by_name(session, scope, dataset))


@router.post("/{dataset}/prompts", response_model=UploadResult)
async def upload_prompts(
    dataset: str,
    body: PromptUpload,
    session: SessionDep,
    scope: ScopeDep,
    state: StateDep,
    background: BackgroundTasks,
) -> UploadResult:
    """Returns once stored; embedding runs afterwards and shows in the dataset's `embedded`."""
    limit = state.settings.max_prompts_per_request
    if len(body.prompts) > limit:
        raise PayloadTooLarge(
            f"{len(body.prompts)} prompts in one request; send at most {limit} per request",
            field="prompts",
        )
    ds, counts = await service.upsert_prompts(session, scope, dataset, body.prompts)
    if counts.inserted or counts.updated:
        background.add_task(_embed_soon, state, ds.id)
    return UploadResult(
        inserted=counts.inserted,
        updated=counts.updated,
        unchanged=counts.unchanged,
        prompt_count=ds.prompt_count,
    )


async def _embed_soon(state: AppState, dataset_id: int) -> None:
    """Async so it runs on the event loop, where background jobs live."""
    state.embedding_jobs.kick(dataset_id)


@router.get("/{dataset}/prompts/{prompt_id:path}", response_model=PromptRead)
async def get_prompt(
    dataset: str, prompt_id: str, session: ReadSessionDep, scope: ScopeDep
) -> PromptRead:
    ds = await service.get_by_name(session, scope, dataset)
    p = await service.get_prompt(session, ds, prompt_id)
    return PromptRead(
        id=p.client_id,
        text=p.text,
        metadata=p.meta,
        content_hash=p.content_hash,
        index=p.idx,
        prior_pass_rate=p.prior_pass_rate,
        created_at=p.created_at,
        updated_at=p.updated_at,
    )
