"""Admin pages, outside /v1: HTML for people, the same API key (or HTTP Basic) to get in."""

from __future__ import annotations

import base64
import binascii

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from service.admin import pages
from service.admin import service as admin
from service.deps import ReadSessionDep, StateDep, key_is_valid
from service.exceptions import AdminUnauthorized
from service.policy import SelectionConfig
from service.predictor import versions
from service.runs import service as runs
from service.stats.summary import summarize


async def require_admin(request: Request, state: StateDep) -> None:
    """A browser can send the key as Basic auth's password (any user name), or as a bearer."""
    if not state.settings.api_keys:
        return
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    token = value if scheme.lower() == "bearer" else ""
    if scheme.lower() == "basic":
        try:
            token = base64.b64decode(value, validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            token = ""
    if not token or not key_is_valid(token, state.settings.api_keys):
        raise AdminUnauthorized("the admin pages take the API key as the Basic auth password")


router = APIRouter(
    prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)], include_in_schema=False
)


@router.get("/", response_class=HTMLResponse)
async def index(session: ReadSessionDep) -> HTMLResponse:
    return HTMLResponse(
        pages.index(await admin.list_runs(session), await admin.list_datasets(session))
    )


@router.get("/runs/{run}", response_class=HTMLResponse)
async def run_page(run: str, session: ReadSessionDep, state: StateDep) -> HTMLResponse:
    r = await runs.get_by_name(session, run)
    policy = SelectionConfig.model_validate(r.selection)
    summary = await summarize(session, state.hot, r, policy, bins=10, last_steps=1000)
    view = await admin.pool_view(session, state.hot, state.predictor_cache, r, policy, summary.pool)
    version = await versions.latest(session, r.id, blobs=False)
    return HTMLResponse(pages.run_page(r, summary, view, admin.savings(r, view), version))
