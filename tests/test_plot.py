import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

from calix import plot
from calix.explain import IntegratedGradients, KernelSHAP, LogitSurrogateSHAP, Occlusion
from calix.metrics import LevelCalibration
from calix.models import wrap
from calix.perturb import Constant, PatchGrid, Superpixels
from calix.plot import calibration_by_level_plot, reliability_diagram
from calix.uncertainty import MCDropout, explanation_distribution

matplotlib.use("Agg")


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


def test_calibration_figures_draw_into_given_axes():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), size=100)
    y = rng.integers(0, 3, 100)
    fig, axes = plot.subplots(1, 3, figsize=(9, 3))
    assert reliability_diagram({"a": (p, y), "b": (p, y)}, ax=axes[:2]) is fig
    assert "ECE" in axes[1].get_title() and len(fig.axes) == 3
    with pytest.raises(ValueError, match="needs 2 axes"):
        reliability_diagram({"a": (p, y), "b": (p, y)}, ax=axes[2])
    assert reliability_diagram((p, y), ax=axes[2]) is fig
    lc = LevelCalibration("ce_kl", np.linspace(0.1, 0.5, 10), np.full(10, 100),
                          np.linspace(0, 1, 11), np.full(10, 0.5), np.full(10, 0.7))
    fig2, ax = plot.subplots()
    assert calibration_by_level_plot({"none": lc}, ax=ax) is fig2
    np.testing.assert_allclose(ax.lines[0].get_ydata(), lc.errors)
    assert not fig2._suptitle


# ---------------------------------------------------------------------- explanation figures
D = 6
NAMES = [f"feat_{j}" for j in range(D)]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    matplotlib.pyplot.close("all")


def _png(path):
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


@pytest.fixture(scope="module")
def tab():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(D, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    model = wrap(net, input_shape=(D,))
    x = torch.randn(12, D, generator=torch.Generator().manual_seed(0))
    exp = KernelSHAP(model, n_samples=64, fill=Constant(0.0)).explain(x)
    exp.feature_names, exp.class_names, exp.data = NAMES, ["a", "b", "c"], x.numpy()
    return model, x, exp


@pytest.fixture(scope="module")
def img():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Dropout(0.3),
                        nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    model = wrap(net, input_shape=(1, 8, 8))
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    exp = IntegratedGradients(model, n_steps=8).explain(x)
    exp.class_names, exp.data = ["zero", "one", "two"], x.numpy()
    return model, x, exp


def _bars(ax):
    from matplotlib.container import BarContainer

    (bars,) = [c for c in ax.containers if isinstance(c, BarContainer)]
    return bars


def _visible(fig):
    return [a for a in fig.axes if a.get_visible()]


def test_explanation_figure_single_image_from_explanation(img, tmp_path):
    _, x, exp = img
    fig = plot.explanation_figure(exp[1], path=tmp_path / "one.png")
    a_in, a_map, bar = fig.axes
    assert a_in.get_title() == "input"
    assert a_map.get_title() == f"target: {exp.class_names[exp.target[1]]}"
    np.testing.assert_allclose(a_map.images[0].get_array(), exp.values[1].sum(0))
    lo, hi = a_map.images[0].get_clim()
    assert lo == -hi == -np.abs(exp.values[1]).max()  # symmetric, centred at 0
    assert bar.get_ylabel() == "attribution" and _png(tmp_path / "one.png")
    # the array form of before still works, and gives the same map
    fig2 = plot.explanation_figure(x[1].numpy(), exp.values[1])
    np.testing.assert_allclose(fig2.axes[1].images[0].get_array(), exp.values[1].sum(0))


def test_explanation_figure_batch_grid(img, tmp_path):
    _, x, exp = img
    fig = plot.explanation_figure(x.numpy(), exp, path=tmp_path / "grid.png")
    vis = _visible(fig)
    assert len(vis) == 2 * len(x)
    inputs = [a for a in vis if a.get_title().startswith("input")]
    maps = [a for a in vis if a.get_title().startswith("target")]
    assert len(inputs) == len(maps) == len(x)
    for i, a in enumerate(maps):
        np.testing.assert_allclose(a.images[0].get_array(), exp.values[i].sum(0))
    assert _png(tmp_path / "grid.png")
    # maps only (no inputs), on caller's axes
    f, axes = matplotlib.pyplot.subplots(1, 3)
    exp_nodata = exp[:]
    exp_nodata.data = None
    assert plot.explanation_figure(exp_nodata, axes=axes) is f
    assert all(len(a.images) == 1 for a in axes)
    with pytest.raises(ValueError, match="needs 3 axes"):
        plot.explanation_figure(exp_nodata, axes=axes[:2])


def test_explanation_figure_tabular_batch(tab, tmp_path):
    _, _, exp = tab
    fig = plot.explanation_figure(exp[:4], max_features=3, path=tmp_path / "tab.png")
    vis = _visible(fig)
    assert len(vis) == 4 and _png(tmp_path / "tab.png")
    for i, a in enumerate(vis):
        top = np.argsort(-np.abs(exp.feature_values[i]))[:3][::-1]
        assert [t.get_text() for t in a.get_yticklabels()] == [NAMES[j] for j in top]
        assert a.get_title() == f"input {i}, target: {exp.class_names[exp.target[i]]}"


def test_attribution_bars_with_intervals(tab, tmp_path):
    model, x, _ = tab
    exp = LogitSurrogateSHAP(model, n_samples=40, fill=Constant(0.0)).explain(x[:2])
    exp.feature_names = NAMES
    fig = plot.attribution_bars(exp, index=1, max_features=4, path=tmp_path / "bars.png")
    ax = fig.axes[0]
    v = exp.feature_values[1]
    top = np.argsort(-np.abs(v))[:4][::-1]
    assert [t.get_text() for t in ax.get_yticklabels()] == [NAMES[j] for j in top]
    bars = _bars(ax)
    np.testing.assert_allclose([p.get_width() for p in bars.patches], v[top], rtol=1e-6)
    segs = bars.errorbar.lines[2][0].get_segments()
    np.testing.assert_allclose([s[0, 0] for s in segs], exp.lower[1][top], rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_allclose([s[1, 0] for s in segs], exp.upper[1][top], rtol=1e-5,
                               atol=1e-7)
    assert ax.get_xlabel() == "attribution (95% interval)" and _png(tmp_path / "bars.png")
    # only a std: ±1 std
    fig = plot.attribution_bars(v, std=exp.std[1], feature_names=NAMES)
    assert fig.axes[0].get_xlabel() == "attribution (±1 std)"
    segs = _bars(fig.axes[0]).errorbar.lines[2][0].get_segments()
    order = np.argsort(-np.abs(v))[::-1]
    np.testing.assert_allclose([s[1, 0] - s[0, 0] for s in segs], 2 * exp.std[1][order],
                               rtol=1e-5)


def test_overlay(img, tmp_path):
    _, x, exp = img
    f, ax = matplotlib.pyplot.subplots()
    fig = plot.overlay(x[2].numpy(), exp, index=2, ax=ax, alpha=0.6, path=tmp_path / "ov.png")
    assert fig is f and len(ax.images) == 2 and _png(tmp_path / "ov.png")
    under, over = ax.images
    assert under.get_cmap().name == "gray"
    m = exp.values[2].sum(0)
    np.testing.assert_allclose(over.get_array(), m)
    alpha = np.asarray(over.get_alpha())
    assert alpha.max() == pytest.approx(0.6)
    np.testing.assert_allclose(alpha, 0.6 * np.abs(m) / np.abs(m).max(), rtol=1e-6)  # float32
    assert fig.axes[-1].get_ylabel() == "attribution"
    with pytest.raises(ValueError, match="needs the image"):
        plot.overlay(None, exp.values[0])


def _boundary_count(lab):
    """Pixel edges between different labels, counted one pair at a time."""
    h, w = lab.shape
    return sum(lab[i, j] != lab[i, j + 1] for i in range(h) for j in range(w - 1)) + \
        sum(lab[i, j] != lab[i + 1, j] for i in range(h - 1) for j in range(w))


@pytest.mark.parametrize("features", [PatchGrid(3), Superpixels(6, compactness=0.1)])
def test_feature_boundaries_follow_the_labels(img, tmp_path, features):
    from matplotlib.collections import LineCollection

    model, x, _ = img
    exp = Occlusion(model, features=features, fill=Constant(0.0)).explain(x[:2])
    fig = plot.feature_boundaries(x[1].numpy(), exp, index=1, path=tmp_path / "b.png")
    ax = fig.axes[0]
    lines = [c for c in ax.collections if isinstance(c, LineCollection)]
    lab = exp.labels[1, 0]
    assert len(lines) == 1 and len(lines[0].get_segments()) == _boundary_count(lab) > 0
    assert ax.get_title() == f"{len(np.unique(lab))} features" and _png(tmp_path / "b.png")
    plain = plot.feature_boundaries(x[1].numpy(), exp.labels[1])
    assert len(plain.axes) == 1 and len(plain.axes[0].images) == 1
    exp.labels = None
    with pytest.raises(ValueError, match="no feature labels"):
        plot.feature_boundaries(x[1].numpy(), exp)


def test_distribution_figure_image_uses_sequential_maps(img, tmp_path):
    model, x, _ = img
    dist = explanation_distribution(IntegratedGradients(model, n_steps=8),
                                    MCDropout(model, n_samples=6, seed=0), x[:2])
    fig = plot.distribution_figure(dist, x[0].numpy(), path=tmp_path / "dist.png")
    a_in, a_mean, a_std, a_cv = fig.axes[:4]
    assert [a.get_title() for a in (a_in, a_mean, a_std)] == [
        f"input ({dist.target[0]})", "mean", "std"]
    assert a_cv.get_title().startswith("CV")
    assert a_mean.images[0].get_cmap().name == "RdBu_r"
    assert a_std.images[0].get_cmap().name == "viridis"
    assert a_cv.images[0].get_cmap().name.startswith("magma")
    assert {a.get_ylabel() for a in fig.axes[4:]} == {"mean attribution", "std", "CV"}
    np.testing.assert_allclose(a_std.images[0].get_array(), dist.std[0, 0])
    assert a_std.images[0].get_clim()[0] == 0
    cv = np.ma.filled(a_cv.images[0].get_array().astype(float), np.nan)
    undefined = dist.extra["cv_masked"][0, 0] | (dist.std[0, 0] == 0)
    assert np.isnan(cv[undefined]).all()
    np.testing.assert_allclose(cv[~undefined], dist.extra["cv"][0, 0][~undefined])
    assert _png(tmp_path / "dist.png")
    with pytest.raises(ValueError, match="explanation distribution"):
        plot.distribution_figure(IntegratedGradients(model, n_steps=4).explain(x[:1]))


def test_distribution_figure_tabular(tab, tmp_path):
    model, x, _ = tab
    dist = explanation_distribution(IntegratedGradients(model, n_steps=8),
                                    MCDropout(model, n_samples=6, seed=0), x[:2])
    dist.feature_names = NAMES
    fig = plot.distribution_figure(dist, index=1, max_features=4, path=tmp_path / "dt.png")
    a_mean, a_std, a_cv = fig.axes
    assert [a.get_xlabel() for a in fig.axes] == ["mean attribution (±1 std)", "std", "CV"]
    top = np.argsort(-np.abs(dist.values[1]))[:4][::-1]
    assert [t.get_text() for t in a_mean.get_yticklabels()] == [NAMES[j] for j in top]
    np.testing.assert_allclose([p.get_width() for p in _bars(a_std).patches],
                               dist.std[1][top])
    assert _png(tmp_path / "dt.png")


def test_summary_bar_ranks_mean_abs_attribution(tab, tmp_path):
    _, _, exp = tab
    fig = plot.summary_bar(exp, max_features=4, path=tmp_path / "sum.png")
    ax = fig.axes[0]
    imp = np.abs(exp.feature_values).mean(0)
    widths = [p.get_width() for p in ax.patches]
    assert widths == sorted(widths) and len(widths) == 4  # largest on top
    np.testing.assert_allclose(widths[::-1], np.sort(imp)[::-1][:4], rtol=1e-6)
    assert [t.get_text() for t in ax.get_yticklabels()][-1] == NAMES[int(imp.argmax())]
    assert ax.get_xlabel() == "mean |attribution| over 12 inputs" and _png(tmp_path / "sum.png")


def test_beeswarm_places_every_input_and_colours_by_value(tab, tmp_path):
    _, _, exp = tab
    fig = plot.beeswarm(exp, max_features=3, path=tmp_path / "bee.png")
    ax = fig.axes[0]
    order = np.argsort(-np.abs(exp.feature_values).mean(0))[:3][::-1]
    assert [t.get_text() for t in ax.get_yticklabels()] == [NAMES[j] for j in order]
    for row, (pts, j) in enumerate(zip(ax.collections, order, strict=True)):
        xy = pts.get_offsets()
        np.testing.assert_allclose(xy[:, 0], exp.feature_values[:, j], rtol=1e-6)
        assert np.all(np.abs(xy[:, 1] - row) <= 0.4 + 1e-9)
        colour = pts.get_array()
        assert colour.argmax() == exp.data[:, j].argmax()  # high values map to the top colour
    assert fig.axes[1].get_ylabel() == "feature value" and _png(tmp_path / "bee.png")
    plain = plot.beeswarm(exp.feature_values, max_features=2)
    assert len(plain.axes) == 1 and plain.axes[0].collections[0].get_array() is None

