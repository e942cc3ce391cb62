"""HTTP surface of datasets and their prompts."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from service.datasets import service
from service.datasets.models import Dataset
from service.datasets.schemas import (
    DatasetCreate,
    DatasetRead,
    PromptRead,
    PromptUpload,
    UploadResult,
)
from service.deps import SessionDep, StateDep
from service.exceptions import PayloadTooLarge

router = APIRouter(prefix="/datasets", tags=["datasets"])


def _read(d: Dataset) -> DatasetRead:
    return DatasetRead(
        name=d.name,
        embedder=d.embedder,
        prompt_count=d.prompt_count,
        embedded=d.embedded_count,
        created_at=d.created_at,
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DatasetRead)
async def create_dataset(
    body: DatasetCreate, session: SessionDep, response: Response
) -> DatasetRead:
    dataset, created = await service.create(session, body)
    if not created:
        response.status_code = status.HTTP_200_OK
    return _read(dataset)


@router.get("/{dataset}", response_model=DatasetRead)
async def get_dataset(dataset: str, session: SessionDep) -> DatasetRead:
    return _read(await service.get_by_name(session, dataset))


@router.post("/{dataset}/prompts", response_model=UploadResult)
async def upload_prompts(
    dataset: str, body: PromptUpload, session: SessionDep, state: StateDep
) -> UploadResult:
    limit = state.settings.max_prompts_per_request
    if len(body.prompts) > limit:
        raise PayloadTooLarge(
            f"{len(body.prompts)} prompts in one request; send at most {limit} per request",
            field="prompts",
        )
    ds, counts = await service.upsert_prompts(session, dataset, body.prompts)
    return UploadResult(
        inserted=counts.inserted,
        updated=counts.updated,
        unchanged=counts.unchanged,
        prompt_count=ds.prompt_count,
    )


@router.get("/{dataset}/prompts/{prompt_id}", response_model=PromptRead)
async def get_prompt(dataset: str, prompt_id: str, session: SessionDep) -> PromptRead:
    ds = await service.get_by_name(session, dataset)
    p = await service.get_prompt(session, ds, prompt_id)
    return PromptRead(
        id=p.client_id,
        text=p.text,
        metadata=p.meta,
        content_hash=p.content_hash,
        index=p.idx,
        created_at=p.created_at,
        updated_at=p.updated_at,
    )
