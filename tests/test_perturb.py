import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.ndimage import correlate1d

from calix.models import Model, wrap
from calix.perturb import (
    Bernoulli,
    Blur,
    Columns,
    Constant,
    FixedSize,
    Marginal,
    Mean,
    Noise,
    PatchGrid,
    Perturbation,
    Pixels,
    ShapleyKernel,
    StratifiedLevels,
    Superpixels,
    Uniform,
    all_coalitions,
    level_bins,
    levels_of,
)

FEATURES = {
    "pixels": Pixels(),
    "patch3": PatchGrid(3),
    "patch2x4": PatchGrid((2, 4)),
    "slic": Superpixels(12, compactness=0.1),
}
DETERMINISTIC_FILLS = {"zero": Constant(0.0), "const": Constant(-1.5), "blur": Blur(3, 1.0),
                       "mean": Mean(torch.linspace(0, 1, 2 * 8 * 9).reshape(2, 8, 9))}


def _images(seed, n=2):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 2, 8, 9, generator=g)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), feat=st.sampled_from(sorted(FEATURES)),
       fill=st.sampled_from(sorted(DETERMINISTIC_FILLS)), m=st.integers(1, 12),
       per_input=st.booleans())
def test_masks_levels_and_fills(seed, feat, fill, m, per_input):
    x = _images(seed)
    engine = Perturbation(FEATURES[feat], DETERMINISTIC_FILLS[fill], chunk_size=5)
    seg = engine.segment(x)
    d = seg.d
    shape = (2, m, d) if per_input else (m, d)
    masks = torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < 0.5
    out = engine.apply(x, masks)
    ref = DETERMINISTIC_FILLS[fill].reference(x)
    full = masks if per_input else masks.expand(2, m, d)
    for i in range(2):
        di = int(seg.n_features[i])
        # level matches mask: fraction of the image's own features removed
        expect = 1 - full[i, :, :di].float().sum(1) / di
        torch.testing.assert_close(out.levels[i], expect)
        # every element takes the input where its feature is kept, the fill elsewhere
        keep = full[i][:, seg.labels[i]]  # (m, C, H, W)
        torch.testing.assert_close(out.inputs[i], torch.where(keep, x[i], ref[i]))
    ones = torch.ones(1, d, dtype=torch.bool)
    torch.testing.assert_close(engine.apply(x, ones).inputs[:, 0], x)
    torch.testing.assert_close(engine.apply(x, ~ones).inputs[:, 0], ref)
    torch.testing.assert_close(engine.apply(x, ~ones).levels, torch.ones(2, 1))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.integers(1, 12), m=st.integers(1, 20),
       groups=st.booleans())
def test_tabular_levels_and_fills(seed, d, m, groups):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, d, generator=g)
    grp = {"first_two": [0, 1]} if groups and d >= 2 else None
    feats = Columns(grp)
    engine = Perturbation(feats, Mean().fit(torch.randn(10, d, generator=g)), chunk_size=4)
    nf = engine.n_features(x)
    assert nf == (d - 1 if grp else d)
    masks = Uniform().sample(m, nf, seed=seed)
    out = engine.apply(x, masks)
    torch.testing.assert_close(out.levels, levels_of(masks).expand(3, m))
    if grp:
        # grouped columns are kept or dropped together
        same = (out.inputs[..., 0] == x[:, None, 0]) == (out.inputs[..., 1] == x[:, None, 1])
        assert bool(same.all())


def test_single_input_drops_batch_axis():
    engine = Perturbation(PatchGrid(4), Constant())
    x = torch.rand(1, 8, 8)
    out = engine.apply(x, torch.ones(5, 4, dtype=torch.bool))
    assert out.inputs.shape == (5, 1, 8, 8) and out.levels.shape == (5,)


def test_chunking_does_not_change_results():
    x = _images(0, n=3)
    masks = Bernoulli(0.3).sample(17, 72, seed=1)
    a = Perturbation(Pixels(), Noise(0.5), chunk_size=4).apply(x, masks, seed=3)
    b = Perturbation(Pixels(), Noise(0.5), chunk_size=7).apply(x, masks, seed=3)
    bg = torch.rand(9, 2, 8, 9)
    e = Perturbation(Pixels(), Marginal(bg), chunk_size=3).apply(x, masks, seed=3)
    f = Perturbation(Pixels(), Marginal(bg), chunk_size=50).apply(x, masks, seed=3)
    torch.testing.assert_close(e.inputs, f.inputs)
    c = Perturbation(Pixels(), Constant(), chunk_size=5).apply(x, masks)
    d = Perturbation(Pixels(), Constant(), chunk_size=10_000).apply(x, masks)
    torch.testing.assert_close(a.inputs, b.inputs)  # seeded stochastic fill is reproducible
    torch.testing.assert_close(c.inputs, d.inputs)


def test_chunks_bound_memory_for_100k_masks():
    engine = Perturbation(PatchGrid(4), Constant(), chunk_size=2048)
    x = torch.rand(1, 16, 16)
    masks = Uniform().sample(100_000, 16, seed=0)
    sizes = [len(lv) for _, _, lv in engine.iter_chunks(x, masks)]
    assert max(sizes) <= 2048 and sum(sizes) == 100_000
    model = wrap(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 2)),
                 input_shape=(1, 16, 16))
    res = engine.query(model, x, masks)
    assert res.outputs.shape == (100_000, 2) and res.n_queries == 100_000


def test_stochastic_fills():
    x = torch.zeros(2, 4)
    bg = torch.arange(12.0).reshape(3, 4)
    engine = Perturbation(Columns(), Marginal(bg))
    out = engine.apply(x, torch.zeros(50, 4, dtype=torch.bool), seed=0)
    rows = out.inputs.reshape(-1, 4)
    # each removed row is a whole background row
    assert all(any(torch.equal(r, b) for b in bg) for r in rows)
    assert len({tuple(r.tolist()) for r in rows}) == 3
    noisy = Perturbation(Columns(), Noise(std=2.0, mean=1.0)).apply(
        torch.zeros(1, 4), torch.zeros(20_000, 4, dtype=torch.bool), seed=0).inputs
    assert abs(float(noisy.mean()) - 1.0) < 0.05 and abs(float(noisy.std()) - 2.0) < 0.05


def test_blur_matches_scipy_mirror_convolution():
    x = _images(5)
    blur = Blur(kernel_size=5, sigma=1.3)
    k = blur.kernel().numpy().astype(np.float64)
    expect = correlate1d(x.numpy().astype(np.float64), k, axis=2, mode="mirror")
    expect = correlate1d(expect, k, axis=3, mode="mirror")
    np.testing.assert_allclose(blur.reference(x).numpy(), expect, atol=1e-5)


def test_float_masks_blend_and_are_differentiable():
    x = torch.rand(1, 1, 4, 4)
    engine = Perturbation(Pixels(), Constant(0.0))
    mask = torch.full((1, 16), 0.25, requires_grad=True)
    out = engine.apply(x, mask)
    torch.testing.assert_close(out.inputs[:, 0], 0.25 * x)
    torch.testing.assert_close(out.levels, torch.full((1, 1), 0.75))
    out.inputs.sum().backward()
    torch.testing.assert_close(mask.grad, x.reshape(1, 16))


def test_superpixels_cover_every_pixel_once():
    from skimage import data as skdata
    from skimage.transform import resize

    img = resize(skdata.astronaut(), (48, 48), anti_aliasing=True).astype(np.float32)
    rgb = torch.from_numpy(np.moveaxis(img, -1, 0))[None]
    grey = torch.from_numpy(resize(skdata.camera(), (40, 40)).astype(np.float32))[None, None]
    for x in (rgb, grey):
        seg = Superpixels(30, compactness=10 if x.shape[1] == 3 else 0.1).segment(x)
        lab = seg.labels[0]
        d = int(seg.n_features[0])
        assert d > 5
        one_hot = torch.nn.functional.one_hot(lab[0], d)  # (H, W, d)
        assert bool((one_hot.sum(-1) == 1).all())  # every pixel in exactly one segment
        assert bool((one_hot.sum((0, 1)) > 0).all())  # no empty segment
        assert bool((lab == lab[:1]).all())  # channels of a pixel share its segment


def test_samplers():
    g = 0
    fs = FixedSize(3).sample(500, 10, seed=g)
    assert bool((fs.sum(1) == 3).all())
    b = Bernoulli(0.2).sample(20_000, 10, seed=g).float().mean()
    assert abs(float(b) - 0.2) < 0.01
    sk = ShapleyKernel(paired=True).sample(40_000, 8, seed=g)
    assert bool((sk[0::2] == ~sk[1::2]).all())  # paired with complements
    sizes = sk[0::2].sum(1)
    freq = torch.bincount(sizes, minlength=8)[1:8].double() / len(sizes)
    torch.testing.assert_close(freq, ShapleyKernel.size_weights(8), atol=0.01, rtol=0)
    st_masks = StratifiedLevels(10).sample(1000, 100, seed=g)
    counts = torch.bincount(level_bins(levels_of(st_masks), 10), minlength=10)
    assert counts.min() >= 80 and counts.max() <= 120  # ~100 per bin, round-off moves a few
    allc = all_coalitions(5)
    assert allc.shape == (32, 5) and len({tuple(r.tolist()) for r in allc}) == 32
    torch.testing.assert_close(Uniform().sample(5, 4, seed=1), Uniform().sample(5, 4, seed=1))


def test_level_bins_edges():
    assert level_bins(torch.tensor([0.0, 0.0999, 0.1, 0.95, 1.0]), 10).tolist() == [0, 0, 1, 9, 9]
    # k/d levels are exact, so λ = 2/5 lands in bin 4 by either path
    m = torch.tensor([[1, 1, 1, 0, 0]], dtype=torch.bool)
    engine_levels = Perturbation(Columns(), Constant()).apply(torch.randn(1, 5), m).levels
    assert level_bins(levels_of(m)).tolist() == level_bins(engine_levels[0]).tolist() == [4]
    for d in range(1, 60):
        kept = torch.arange(d + 1)
        masks = torch.arange(d)[None, :] < kept[:, None]
        expect = torch.div((d - kept) * 10, d, rounding_mode="floor").clamp(max=9)
        assert level_bins(levels_of(masks)).tolist() == expect.tolist()
    with pytest.raises(ValueError, match=r"levels must lie in \[0, 1\]"):
        level_bins(torch.tensor([1.1]))


class _LevelRecorder(Model):
    level_aware = True

    def __init__(self):
        super().__init__(input_shape=(3,))
        self.seen = []

    def _forward(self, x):  # pragma: no cover - never called without levels here
        raise AssertionError

    def _forward_levels(self, chunk, levels):
        self.seen.append(levels)
        return torch.stack([chunk.sum(1), levels], dim=1)


def test_query_passes_levels_and_matches_apply():
    x = torch.randn(2, 3)
    masks = all_coalitions(3)
    engine = Perturbation(Columns(), Constant(0.0), chunk_size=5)
    model = _LevelRecorder()
    res = engine.query(model, x, masks)
    out = engine.apply(x, masks)
    torch.testing.assert_close(res.levels, out.levels)
    torch.testing.assert_close(res.outputs[..., 1], out.levels)
    torch.testing.assert_close(res.outputs[..., 0], out.inputs.sum(-1))
    assert res.n_queries == 16 and len(model.seen) == 4  # 16 rows in chunks of 5


def test_bad_inputs():
    engine = Perturbation(PatchGrid(4), Constant())
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"masks must have shape \(m, 4\)"):
        engine.apply(x, torch.ones(3, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"masks must be boolean or numbers in \[0, 1\]"):
        engine.apply(x, torch.full((3, 4), 1.5))
    with pytest.raises(ValueError, match=r"masks must be boolean or numbers in \[0, 1\]"):
        engine.apply(x, torch.full((3, 4), 2))
    with pytest.raises(TypeError, match="masks must be a boolean or numeric array"):
        engine.apply(x, [["a"] * 4])
    with pytest.raises(ValueError, match="x is empty"):
        engine.apply(torch.zeros(0, 1, 8, 8), torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="one input with 3 dimension"):
        engine.apply(torch.rand(8, 8), torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="NaN or infinite"):
        engine.apply(torch.full((1, 8, 8), float("nan")), torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="wrap it with calix.wrap"):
        engine.query(torch.nn.Linear(2, 2), x, torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(RuntimeError, match="Mean fill is not fitted"):
        Perturbation(Columns(), Mean()).apply(torch.zeros(1, 3), torch.ones(1, 3))
    with pytest.raises(ValueError, match="fitted on inputs of shape"):
        Perturbation(Columns(), Mean(np.zeros(4))).apply(torch.zeros(1, 3), torch.ones(1, 3))
    with pytest.raises(ValueError, match="too large"):
        Blur(kernel_size=11).reference(torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="odd"):
        Blur(kernel_size=4)
    with pytest.raises(ValueError, match="appear in more than one group"):
        Columns({"a": [0, 1], "b": [1, 2]})
    with pytest.raises(ValueError, match="outside"):
        Columns({"a": [0, 7]}).segment(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="exceeds the number of features"):
        FixedSize(5).sample(2, 3)
    with pytest.raises(ValueError, match="p must lie"):
        Bernoulli(1.5)
    with pytest.raises(ValueError, match="exact enumeration"):
        all_coalitions(30)
    with pytest.raises(TypeError, match="calix Fill"):
        Perturbation(Pixels(), 0.0)
