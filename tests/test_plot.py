import numpy as np

from calix.metrics import LevelCalibration
from calix.plot import calibration_by_level_plot, reliability_diagram


def test_reliability_diagram_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), size=300)
    y = rng.integers(0, 4, 300)
    fig = reliability_diagram({"a": (p, y), "b": (p, y)}, path=tmp_path / "rel.png")
    assert len(fig.axes) == 2 and "ECE" in fig.axes[0].get_title()
    assert (tmp_path / "rel.png").read_bytes()[:4] == b"\x89PNG"


def test_calibration_by_level_plot(tmp_path):
    lc = LevelCalibration("ce_kl", np.linspace(0.1, 0.5, 10), np.full(10, 100),
                          np.linspace(0, 1, 11), np.full(10, 0.5), np.full(10, 0.7))
    fig = calibration_by_level_plot({"none": lc}, path=tmp_path / "lvl.png")
    line = fig.axes[0].lines[0]
    np.testing.assert_allclose(line.get_ydata(), lc.errors)
    assert "max 0.500" in fig.axes[0].get_legend().get_texts()[0].get_text()
    assert (tmp_path / "lvl.png").stat().st_size > 1000
