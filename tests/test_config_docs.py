"""docs/configuration.md is generated from the settings classes; these fail when it is stale.

Regenerate with `.venv/bin/depo settings --markdown > docs/configuration.md`.
"""

from __future__ import annotations

from pathlib import Path

from service.cli import NO_DESCRIPTION, settings_markdown
from service.config import Settings
from service.policy import SelectionConfig

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def test_configuration_doc_is_the_generated_one() -> None:
    assert DOC.read_text(encoding="utf-8") == settings_markdown(), (
        "docs/configuration.md is stale: run "
        "`.venv/bin/depo settings --markdown > docs/configuration.md`"
    )


def test_every_service_setting_has_a_description() -> None:
    missing = [name for name, f in Settings.model_fields.items() if not f.description]
    assert not missing, f"Settings fields without Field(description=...): {missing}"


def test_every_setting_has_a_row() -> None:
    doc = settings_markdown()
    for name in Settings.model_fields:
        assert f"| `DEPO_{name.upper()}` |" in doc
    for name, field in SelectionConfig.model_fields.items():
        assert f"| `{name}` |" in doc
        assert (field.description or NO_DESCRIPTION).replace("|", "\\|") in doc
