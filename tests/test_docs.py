"""The guides in docs/guides run as written: every ```python block of a guide, in order, in
one namespace (a guide's later blocks use what its earlier ones made)."""

import re
from pathlib import Path

import matplotlib
import pytest

GUIDES = sorted((Path(__file__).parent.parent / "docs" / "guides").glob("*.md"))
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def test_guides_exist():
    assert {g.stem for g in GUIDES} >= {"tables", "images"}


@pytest.mark.parametrize("guide", GUIDES, ids=lambda g: g.stem)
def test_guide_runs(guide, tmp_path, monkeypatch):
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    blocks = BLOCK.findall(guide.read_text())
    assert blocks, f"{guide.name} has no python blocks"
    namespace: dict = {"__name__": f"guide_{guide.stem}"}
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f"{guide.name}[block {i}]", "exec"), namespace)
        except Exception as exc:  # name the failing block
            raise AssertionError(f"{guide.name}, block {i} failed: {exc!r}") from exc
    import matplotlib.pyplot as plt

    plt.close("all")
