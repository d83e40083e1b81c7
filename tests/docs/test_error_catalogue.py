"""Every entry of the documented error catalogue raises its type with a message naming the fault."""

import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("error_catalogue", ROOT / "scripts" / "error_catalogue.py")
catalogue = importlib.util.module_from_spec(spec)
spec.loader.exec_module(catalogue)


@pytest.mark.parametrize("entry", catalogue.CATALOGUE, ids=[e[0] for e in catalogue.CATALOGUE])
def test_entry_raises_documented_error(entry):
    name, _, expected, phrases = entry
    exc = catalogue.run(entry)
    assert exc is not None, f"{name}: nothing was raised"
    assert isinstance(exc, expected), f"{name}: {type(exc).__name__}: {exc}"
    for phrase in phrases:
        assert phrase in str(exc), f"{name}: {phrase!r} missing from: {exc}"


def test_catalogue_catches_a_silent_fault():
    """Negative control: an entry whose trigger raises nothing is reported, not passed."""
    assert catalogue.run(("silent", lambda: None, ValueError, [])) is None


def test_docs_list_every_entry():
    text = (ROOT / "docs" / "errors.md").read_text()
    for name, *_ in catalogue.CATALOGUE:
        assert f"| {name} |" in text, f"docs/errors.md lacks {name!r}: regenerate with python scripts/error_catalogue.py"
