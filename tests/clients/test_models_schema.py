"""The client's models read every body the OpenAPI schema allows, success and error alike."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import httpx
import pytest
from depo_client import _models as m
from depo_client._curation import Profile, Routing
from depo_client._exceptions import error_from_response
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.app import create_app
from tests.fixtures.schema_examples import examples

SCHEMA: dict[str, Any] = create_app().openapi()

PARSERS: dict[tuple[str, str], Callable[[Mapping[str, Any]], Any]] = {
    ("post", "/v1/datasets"): m.Dataset.from_json,
    ("get", "/v1/datasets/{dataset}"): m.Dataset.from_json,
    ("post", "/v1/datasets/{dataset}/prompts"): m.UploadResult.from_json,
    ("get", "/v1/datasets/{dataset}/prompts/{prompt_id}"): m.Prompt.from_json,
    ("post", "/v1/runs"): m.Run.from_json,
    ("get", "/v1/runs/{run}"): m.Run.from_json,
    ("post", "/v1/runs/{run}/batches"): m.Batch.from_json,
    ("post", "/v1/runs/{run}/outcomes"): m.OutcomeAck.from_json,
    ("get", "/v1/runs/{run}/prompts/{prompt_id}"): m.PromptStats.from_json,
    ("get", "/v1/runs/{run}/summary"): m.Summary.from_json,
    ("post", "/v1/runs/{run}/predict"): m.Predictions.from_json,
    ("get", "/v1/runs/{run}/predictor"): m.PredictorInfo.from_json,
    ("post", "/v1/runs/{run}/route"): Routing.from_json,
    ("get", "/v1/runs/{run}/profile"): Profile.from_json,
}
STREAMED = {
    ("get", "/v1/runs/{run}/export")
}  # JSONL/CSV/Parquet rows: tests/clients/test_curation.py


def _inline(node: Any) -> Any:
    """The schema with every `$ref` replaced by what it names (none of ours is recursive)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            return _inline(SCHEMA["components"]["schemas"][ref.rsplit("/", 1)[1]])
        return {k: _inline(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v) for v in node]
    return node


def _responses(success: bool) -> list[tuple[str, str, str, dict[str, Any]]]:
    out = []
    for path, operations in SCHEMA["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            if (method, path) in STREAMED and success:
                continue
            for status, response in operation["responses"].items():
                if status.startswith("2") == success:
                    body = response["content"]["application/json"]["schema"]
                    out.append((method, path, status, _inline(body)))
    return out


def _agrees(parsed: Any, sent: Any, where: str = "") -> None:
    """Every field the model has and the body sent holds the body's value, nested ones too."""
    if dataclasses.is_dataclass(parsed):
        assert isinstance(sent, dict), where
        for f in dataclasses.fields(parsed):
            if f.name in sent:
                _agrees(getattr(parsed, f.name), sent[f.name], f"{where}.{f.name}")
    elif isinstance(parsed, tuple):
        assert isinstance(sent, list) and len(parsed) == len(sent), where
        for i, (p, v) in enumerate(zip(parsed, sent, strict=True)):
            _agrees(p, v, f"{where}.{i}")
    elif isinstance(parsed, datetime):
        assert parsed == datetime.fromisoformat(sent), where
    elif isinstance(sent, float | int) and not isinstance(sent, bool):
        assert isinstance(parsed, float | int) and math.isclose(parsed, sent), (where, parsed)
    else:
        assert parsed == sent, (where, parsed, sent)


def test_every_v1_operation_has_a_client_parser() -> None:
    operations = {(method, path) for method, path, _, _ in _responses(success=True)}
    assert operations == set(PARSERS)


_SLOW = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize(
    ("method", "path", "status", "schema"),
    _responses(success=True),
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_client_models_parse_every_success_body(
    method: str, path: str, status: str, schema: dict[str, Any]
) -> None:
    parse = PARSERS[(method, path)]

    @_SLOW
    @given(examples(schema))
    def check(body: dict[str, Any]) -> None:
        _agrees(parse(body), body)

    check()


@pytest.mark.parametrize(
    ("method", "path", "status", "schema"),
    _responses(success=False),
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_client_reads_every_error_body(
    method: str, path: str, status: str, schema: dict[str, Any]
) -> None:
    @settings(max_examples=10, deadline=None)
    @given(examples(schema), st.sampled_from([status]))
    def check(body: dict[str, Any], code: str) -> None:
        err = error_from_response(httpx.Response(int(code), json=body))
        assert (err.status_code, err.type, err.detail) == (int(code), body["type"], body["detail"])
        assert err.field == body.get("field")
        assert err.body == body

    check()
