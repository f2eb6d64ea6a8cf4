"""The API reference in docs/api.md is generated from the docstrings and kept current."""

import importlib

from calix import _apidoc


def test_api_reference_is_current_and_complete():
    text = _apidoc.render()
    on_disk = (_apidoc.Path(__file__).parent.parent / "docs" / "api.md").read_text()
    assert text == on_disk, "docs/api.md is stale: run `make docs`"
    for name in _apidoc.MODULES:
        mod = importlib.import_module(name)
        assert f"## `{name}`" in text
        for attr in mod.__all__:
            assert f"`{attr}" in text, f"{name}.{attr} is missing from the API reference"
