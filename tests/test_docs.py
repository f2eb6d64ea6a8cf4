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


def test_readme_quick_start_runs(tmp_path, monkeypatch):
    """The README's quick start, as a reader would paste it (its models come from the cache
    the other tests fill)."""
    monkeypatch.chdir(tmp_path)
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("## Quick start"):]
    code = BLOCK.findall(section)[0]
    namespace: dict = {"__name__": "readme_quick_start"}
    exec(compile(code, "README.md[quick start]", "exec"), namespace)
    assert namespace["shap_exp"].feature_values.shape == (8, 16)
    assert namespace["res"].outputs.shape == (8, 200, 10)
