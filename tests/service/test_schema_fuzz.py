"""Schemathesis, every check, against a live embedded server: the schema and the service agree."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from service.app import create_app
from tests.fixtures.live import REPO_ROOT, LiveServer
from tests.fixtures.schema_checks import beyond_schema

MAX_TIME = 60
"""Seconds of fuzzing; coverage runs first, then fuzzing and stateful tests share what is left."""

KEY = "fuzz-key"


def test_beyond_schema_takes_only_rules_a_schema_cannot_state() -> None:
    assert beyond_schema({"type": "invalid_input", "detail": "unknown prompt"})
    value = {"type": "value_error", "loc": ["body"], "msg": "n_max below n_min"}
    assert beyond_schema({"type": "validation_error", "detail": "x", "errors": [value]})
    typed = {"type": "int_type", "loc": ["body", "step"], "msg": "not an integer"}
    assert not beyond_schema({"type": "validation_error", "detail": "x", "errors": [value, typed]})
    assert not beyond_schema({"type": "validation_error", "detail": "x", "errors": []})
    assert not beyond_schema({"type": "not_found", "detail": "x"})
    assert not beyond_schema(["invalid_input"])


@pytest.mark.slow
def test_schemathesis_all_checks_find_nothing(tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "data", DEPO_API_KEYS=KEY).start()
    try:
        run = subprocess.run(
            [
                str(Path(sys.executable).parent / "st"),
                *("run", f"{server.url}/openapi.json", "--header", f"Authorization: Bearer {KEY}"),
                # every check; positive_data_acceptance in the form tests/fixtures/schema_checks
                # gives it: a schema-valid request may still break a rule no schema can state
                *("--checks", "all", "--exclude-checks", "positive_data_acceptance"),
                *("--max-examples", "30", "--max-time", str(MAX_TIME), "--seed", "21"),
                *("--workers", "1", "--request-timeout", "30", "--no-color"),
            ],
            cwd=tmp_path,  # where it keeps its cache of crashes to replay
            env={
                **os.environ,
                "PYTHONPATH": str(REPO_ROOT),
                "SCHEMATHESIS_HOOKS": "tests.fixtures.schema_checks",
            },
            capture_output=True,
            text=True,
            timeout=MAX_TIME + 90,
        )
    finally:
        server.stop()
    out = run.stdout + run.stderr
    print(out[-1500:])
    assert run.returncode == 0, out[-20_000:]
    generated = re.search(r"(\d+) generated", out)
    assert generated is not None and int(generated.group(1)) >= 500, out[-3000:]
    operations = sum(len(ops) for ops in create_app().openapi()["paths"].values())
    assert re.search(rf"Tested: {operations}\b", out), (operations, out[-3000:])
