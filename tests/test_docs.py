"""docs/methods.md is generated from the registry and must be up to date."""

from __future__ import annotations

from pathlib import Path

from xbench.docs import builtin_methods, methods_markdown

DOC = Path(__file__).resolve().parent.parent / "docs" / "methods.md"


def test_methods_doc_is_generated_and_current():
    text = DOC.read_text()
    assert text == methods_markdown(), \
        "docs/methods.md is stale: run `xbench docs methods > docs/methods.md`"
    for name in builtin_methods():
        assert f"## `{name}`" in text
    assert "test_raising" not in text  # test-only registrations never leak into the docs
