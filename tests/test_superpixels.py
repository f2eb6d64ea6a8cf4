"""SLIC superpixels at scale: parallel segmentation over images, the shared label cache, and
labels on the input's device."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from skimage import data, transform
from skimage.segmentation import slic

from calix.explain import LIME, KernelSHAP
from calix.models import wrap
from calix.nets import resnet18
from calix.perturb import Constant, Superpixels


@pytest.fixture(autouse=True)
def _fresh_cache():
    Superpixels.clear_cache()
    yield
    Superpixels.clear_cache()
    Superpixels.set_cache_size(64 << 20)


@pytest.fixture(scope="module")
def photos():
    """Three scikit-image photos at 48x48, (3, 3, 48, 48) float32 in [0, 1]."""
    imgs = [transform.resize(getattr(data, name)(), (48, 48), anti_aliasing=True)
            for name in ("astronaut", "coffee", "chelsea")]
    return torch.as_tensor(np.stack(imgs).transpose(0, 3, 1, 2), dtype=torch.float32)


def _reference(x: torch.Tensor, n_segments: int, compactness: float) -> np.ndarray:
    """skimage's SLIC image by image, relabelled to 0..k-1, shape (n, H, W)."""
    out = []
    for img in x.numpy():
        seg = slic(np.moveaxis(img, 0, -1), n_segments=n_segments, compactness=compactness,
                   sigma=0.0, channel_axis=-1, start_label=0, enforce_connectivity=True)
        out.append(np.unique(seg, return_inverse=True)[1].reshape(seg.shape))
    return np.stack(out)


@pytest.mark.parametrize("n_jobs", [1, 2, None, -1])
def test_labels_match_skimage_for_any_n_jobs(photos, n_jobs):
    seg = Superpixels(20, compactness=10, n_jobs=n_jobs, cache=False).segment(photos)
    ref = _reference(photos, 20, 10)
    assert seg.labels.shape == photos.shape and seg.labels.dtype == torch.long
    for ch in range(3):  # every channel carries the image's labels
        np.testing.assert_array_equal(seg.labels[:, ch].numpy(), ref)
    np.testing.assert_array_equal(seg.n_features.numpy(), ref.reshape(3, -1).max(1) + 1)
    assert not seg.shared


def test_images_are_segmented_in_parallel_threads(photos, monkeypatch):
    # each SLIC call waits for a second one to be running at the same time: a serial loop
    # would break the barrier
    barrier = threading.Barrier(2, timeout=10)
    threads = set()
    original = Superpixels._slic

    def slic_waiting(self, img):
        threads.add(threading.get_ident())
        barrier.wait()
        return original(self, img)

    monkeypatch.setattr(Superpixels, "_slic", slic_waiting)
    seg = Superpixels(20, compactness=10, n_jobs=2, cache=False).segment(photos[:2])
    assert len(threads) == 2
    np.testing.assert_array_equal(seg.labels[:, 0].numpy(), _reference(photos[:2], 20, 10))


def test_cache_segments_each_image_once(photos, monkeypatch):
    calls = []
    original = Superpixels._slic
    monkeypatch.setattr(Superpixels, "_slic",
                        lambda self, img: calls.append(1) or original(self, img))
    first = Superpixels(20, compactness=10).segment(photos)
    assert len(calls) == 3
    # another instance with the same parameters, a batch that overlaps: only the new image
    again = Superpixels(20, compactness=10).segment(photos[[2, 0]])
    assert len(calls) == 3
    torch.testing.assert_close(again.labels, first.labels[[2, 0]])
    torch.testing.assert_close(again.n_features, first.n_features[[2, 0]])
    info = Superpixels.cache_info()
    assert (info["hits"], info["misses"], info["images"]) == (2, 3, 3)
    # other parameters or other pixels: computed afresh
    Superpixels(21, compactness=10).segment(photos[:1])
    changed = photos[:1].clone()
    changed[0, 0, 0, 0] += 0.5
    Superpixels(20, compactness=10).segment(changed)
    assert len(calls) == 5
    # cache=False never reads or writes it
    Superpixels(20, compactness=10, cache=False).segment(photos)
    assert len(calls) == 8 and Superpixels.cache_info()["images"] == 5


def test_cache_is_bounded_in_bytes(photos):
    one = 48 * 48 * 2  # int16 labels of one 48x48 image
    Superpixels.set_cache_size(2 * one)
    sp = Superpixels(20, compactness=10)
    sp.segment(photos)
    info = Superpixels.cache_info()
    assert info["images"] == 2 and info["bytes"] == 2 * one <= info["max_bytes"]
    # the least recently used image (the first) was evicted; the last two are hits
    sp.segment(photos[1:])
    assert Superpixels.cache_info()["hits"] == 2
    Superpixels.set_cache_size(0)
    sp.segment(photos)
    assert Superpixels.cache_info()["images"] == 0
    with pytest.raises(ValueError, match="max_bytes must be >= 0, got -1"):
        Superpixels.set_cache_size(-1)


def test_cached_labels_are_not_shared_with_the_caller(photos):
    sp = Superpixels(20, compactness=10)
    a = sp.segment(photos).labels.clone()
    b = sp.segment(photos).labels
    b[:, 0].add_(100)  # a caller writing into its labels (all channels share them) ...
    assert int(b[:, 2].min()) >= 100
    torch.testing.assert_close(sp.segment(photos).labels, a)  # ... leaves the cache alone


def test_two_explainers_share_one_segmentation(photos, monkeypatch):
    calls = []
    original = Superpixels._slic
    monkeypatch.setattr(Superpixels, "_slic",
                        lambda self, img: calls.append(1) or original(self, img))
    model = wrap(resnet18(num_classes=4, width=0.0625, seed=0))
    x = photos[:2]
    kw = dict(fill=Constant(0.0), n_samples=64, seed=0)
    a = KernelSHAP(model, features=Superpixels(16, compactness=10), **kw).explain(x)
    b = LIME(model, features=Superpixels(16, compactness=10), **kw).explain(x)
    assert len(calls) == 2  # once per image, however many explainers and engine calls
    np.testing.assert_array_equal(a.labels, b.labels)


@pytest.mark.parametrize("bad", [0, -2, 1.5, "all"])
def test_invalid_n_jobs(bad):
    with pytest.raises(ValueError, match="n_jobs must be None, -1 or a positive integer"):
        Superpixels(10, n_jobs=bad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_labels_come_back_on_the_inputs_device(photos):
    seg = Superpixels(20, compactness=10).segment(photos.cuda())
    assert seg.labels.device.type == "cuda"
    np.testing.assert_array_equal(seg.labels[:, 0].cpu().numpy(), _reference(photos, 20, 10))
