"""calix at the scale its users work at: 224x224 photos, ImageNet-sized networks, mixed precision.

Explains scikit-image photos (astronaut, coffee, chelsea, rocket, hubble_deep_field,
immunohistochemistry, retina, the left view of stereo_motorcycle; resized to 224x224, values
in [0, 1]) with a randomly initialised ResNet-50 (CUDA) or ResNet-18 (CPU) from
:mod:`calix.nets`, 1000 classes, each photo's predicted class as target, the probability as
explained score, removed features set to 0:

- calix KernelSHAP, LIME and LogitSurrogateSHAP on ~50 SLIC superpixels with 2000 coalitions,
  against
  Captum's ``KernelShap`` / ``Lime`` (ridge surrogate, alpha 1) on the same superpixels, one
  photo at a time (Captum's feature mask is shared by a batch), for every
  ``perturbations_per_eval`` in ``--ppe``;
- calix RISE with 4000 masks (no peer);
- calix Occlusion with 16-px patches (``PatchGrid(16)``: 196 features) against Captum's
  ``FeatureAblation`` with the same mask, all photos in one call, ``perturbations_per_eval``
  = batch size / number of photos (the same rows per forward pass);
- calix IntegratedGradients with 50 Gauss-Legendre steps against Captum's
  ``IntegratedGradients`` with ``internal_batch_size`` = the batch size.

Each in float32 and under bf16 autocast (``wrap(module, autocast="bf16")``; Captum's forward
runs under the same ``torch.autocast``). Printed per case: wall time (best of 2 after an
untimed warm-up; ``--repeats`` for more on a busy machine), the model rows it evaluated, its
*limit* -- the model alone on as many rows at the same batch size (forward only; forward +
backward for IG, whose limit is what any gradient method must pay), timed alternately with the
case so that both see the same load -- the ratio time / limit, and peak memory:

- CUDA: ``torch.cuda.max_memory_allocated`` over the warm-up run, less what was allocated
  before it (model and photos);
- CPU: every case runs in a fresh subprocess (``ru_maxrss`` is a process-wide high-water mark
  that never goes down, so one process cannot attribute peaks to cases); printed are the
  subprocess's peak RSS and its growth over the RSS it had after loading the model, photos and
  libraries. tracemalloc was not used: it misses torch's allocations.

Then the "cheap model" case on CPU: eight photos x 2000 coalitions of calix KernelSHAP on a
tiny model (8x8 average pool + linear layer), where building perturbed rows, not the model,
dominates: peak RSS and the ratio of the explainer's time to the forward-only limit.

The header also times SLIC on the photos: serial, with ``Superpixels``' threads, and cached.

Run (GPU):            .venv/bin/python benchmarks/scale.py
Run (CPU, quick):     .venv/bin/python benchmarks/scale.py --quick
``--quick`` means: 2 photos at 96x96, a quarter-width ResNet-18, 128 coalitions, 256 RISE
masks, 8 IG steps, one ``perturbations_per_eval`` and 500 coalitions in the cheap case
and best of 3 (about 8 minutes on 2 busy CPU cores, most of it starting subprocesses and
timing limits; on a shared machine the times swing by 2-5x from run to run).
Every budget has its own flag (``--help``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
          "immunohistochemistry", "retina", "stereo_motorcycle")

CASES = [
    ("kernel_shap", "calix"), ("kernel_shap", "captum"),
    ("lime", "calix"), ("lime", "captum"),
    ("logit_surrogate_shap", "calix"),
    ("rise", "calix"),
    ("occlusion", "calix"), ("occlusion", "captum"),
    ("ig", "calix"), ("ig", "captum"),
]


# ---------------------------------------------------------------------- setup
def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a short CPU run (see the docstring)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--arch", default=None, choices=("resnet18", "resnet50", "vit_tiny"),
                   help="default: resnet50 on CUDA, resnet18 on CPU")
    p.add_argument("--width", type=float, default=None, help="ResNet width multiplier (1)")
    p.add_argument("--images", type=int, default=None, help="photos explained (6)")
    p.add_argument("--size", type=int, default=None, help="photo side in pixels (224)")
    p.add_argument("--segments", type=int, default=50, help="SLIC superpixels (~50)")
    p.add_argument("--budget", type=int, default=None, help="coalitions per photo (2000)")
    p.add_argument("--rise-masks", type=int, default=None, help="RISE masks (4000)")
    p.add_argument("--ig-steps", type=int, default=None, help="IG steps (50)")
    p.add_argument("--patch", type=int, default=16, help="occlusion patch side (16)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="model batch (256 on CUDA, 64 on CPU)")
    p.add_argument("--ppe", default=None,
                   help="Captum KernelShap/Lime perturbations_per_eval values, comma-separated "
                        "(default: 64,<batch size>; --quick: <batch size>)")
    p.add_argument("--precision", default="fp32,bf16", help="fp32, bf16 and/or fp16")
    p.add_argument("--cases", default=None,
                   help="comma-separated methods to run (kernel_shap, lime, "
                        "logit_surrogate_shap, rise, occlusion, ig); default all")
    p.add_argument("--no-captum", action="store_true", help="calix only")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--cheap-budget", type=int, default=None, help="cheap case coalitions (2000)")
    p.add_argument("--no-cheap", action="store_true", help="skip the cheap-model case")
    p.add_argument("--only-cheap", action="store_true", help="run the cheap-model case only")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed runs after the warm-up; the best counts (2; --quick: 3)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per CPU subprocess")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one case
    a = p.parse_args(argv)
    a.device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = a.device.startswith("cuda")
    defaults = dict(arch="resnet50" if cuda else "resnet18", width=1.0, images=6, size=224,
                    budget=2000, rise_masks=4000, ig_steps=50,
                    batch_size=256 if cuda else 64, cheap_budget=2000, repeats=2)
    if a.quick:
        defaults.update(width=0.25, images=2, size=96, budget=128, rise_masks=256,
                        ig_steps=8, batch_size=64, cheap_budget=500, repeats=3)
    for k, v in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.ppe is None:
        a.ppe = str(a.batch_size) if a.quick else f"64,{a.batch_size}"
    a.ppe_list = sorted({int(v) for v in a.ppe.split(",")})
    REPEATS[0] = max(1, int(a.repeats))
    a.precisions = [v.strip() for v in a.precision.split(",") if v.strip()]
    a.methods = None if a.cases is None else {v.strip() for v in a.cases.split(",")}
    return a


def photos(n: int, size: int) -> torch.Tensor:
    """``n`` scikit-image photos (shipped with the package), (n, 3, size, size) in [0, 1]."""
    from skimage import data, transform

    if not 1 <= n <= len(PHOTOS):
        raise ValueError(f"--images must lie in [1, {len(PHOTOS)}], got {n}")
    imgs = []
    for name in PHOTOS[:n]:
        img = getattr(data, name)()
        img = img[0] if isinstance(img, tuple) else img  # stereo_motorcycle: (left, right, disp)
        imgs.append(transform.resize(img[..., :3], (size, size), anti_aliasing=True))
    return torch.as_tensor(np.stack(imgs).transpose(0, 3, 1, 2), dtype=torch.float32)


def network(a: argparse.Namespace) -> torch.nn.Module:
    from calix import nets

    if a.arch == "vit_tiny":
        return nets.vit_tiny(image_size=a.size, seed=0)
    return getattr(nets, a.arch)(width=a.width, seed=0)


def autocast_dtype(precision: str) -> torch.dtype | None:
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


REPEATS = [2]  # timed runs per measurement (--repeats)


def best_of(fn: Callable[[], Any], device: str) -> float:
    """Best of ``--repeats`` (2) wall times after an untimed warm-up."""
    fn()
    times = []
    for _ in range(REPEATS[0]):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def rss_mib() -> float:
    """Peak resident set size of this process so far (Linux: ru_maxrss is in KiB)."""
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


# ---------------------------------------------------------------------- one case
class Setup:
    """Model, photos, targets and superpixels shared by the cases of one process."""

    def __init__(self, a: argparse.Namespace, precision: str):
        from calix.models import wrap
        from calix.perturb import PatchGrid, Superpixels

        self.a, self.device = a, a.device
        self.module = network(a).to(a.device)
        self.x = photos(a.images, a.size).to(a.device)
        if a.channels_last:
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.dtype = autocast_dtype(precision)
        self.model = wrap(self.module, batch_size=a.batch_size, autocast=self.dtype,
                          channels_last=a.channels_last)
        with torch.no_grad():
            self.targets = wrap(self.module).forward(self.x).argmax(1).cpu()
        self.superpixels = Superpixels(a.segments, compactness=10.0)
        self.seg = self.superpixels.segment(self.x)  # cached: the explainers reuse it
        self.patches = PatchGrid(a.patch)
        self.rows = 0  # model rows counted by the Captum forward

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities of the module (what Captum explains), counted."""
        self.rows += len(x)
        ctx = (torch.autocast(device_type=torch.device(self.device).type, dtype=self.dtype)
               if self.dtype is not None else contextlib.nullcontext())
        with ctx:
            z = self.module(x)
        return torch.softmax(z.float(), dim=-1)

    # ---- runners: each explains all photos and returns the number of model rows
    def calix(self, method: str) -> Callable[[], int]:
        from calix.explain import (
            LIME,
            RISE,
            IntegratedGradients,
            KernelSHAP,
            LogitSurrogateSHAP,
            Occlusion,
        )
        from calix.perturb import Constant

        a, m, zero = self.a, self.model, Constant(0.0)
        if method == "kernel_shap":
            e = KernelSHAP(m, features=self.superpixels, fill=zero, n_samples=a.budget)
        elif method == "lime":
            e = LIME(m, features=self.superpixels, fill=zero, n_samples=a.budget)
        elif method == "logit_surrogate_shap":
            e = LogitSurrogateSHAP(m, features=self.superpixels, fill=zero, n_samples=a.budget)
        elif method == "rise":
            e = RISE(m, n_masks=a.rise_masks)
        elif method == "occlusion":
            e = Occlusion(m, features=self.patches, fill=zero)
        else:
            e = IntegratedGradients(m, n_steps=a.ig_steps, internal_batch_size=a.batch_size)

        def run() -> int:
            return int(e.explain(self.x, target=self.targets).n_queries)

        return run

    def captum(self, method: str, ppe: int) -> Callable[[], int]:
        from captum._utils.models.linear_model import SkLearnRidge
        from captum.attr import FeatureAblation, IntegratedGradients, KernelShap, Lime

        a, x, tgt = self.a, self.x, self.targets.tolist()
        if method in ("kernel_shap", "lime"):
            expl = (KernelShap(self.probs) if method == "kernel_shap"
                    else Lime(self.probs, interpretable_model=SkLearnRidge(alpha=1.0)))
            masks = self.seg.labels[:, :1]

            def run() -> int:
                self.rows = 0
                for i in range(len(x)):  # Captum shares one feature mask per call
                    expl.attribute(x[i:i + 1], baselines=0.0, target=tgt[i],
                                   feature_mask=masks[i:i + 1], n_samples=a.budget,
                                   perturbations_per_eval=ppe)
                return self.rows

            return run
        if method == "occlusion":
            fa = FeatureAblation(self.probs)
            mask = self.patches.segment(x[:1]).labels[:, :1]

            def run() -> int:
                self.rows = 0
                fa.attribute(x, baselines=0.0, target=tgt, feature_mask=mask,
                             perturbations_per_eval=max(1, a.batch_size // len(x)))
                return self.rows

            return run
        ig = IntegratedGradients(self.probs)

        def run() -> int:
            self.rows = 0
            ig.attribute(x, baselines=torch.zeros_like(x), target=tgt, n_steps=a.ig_steps,
                         method="gausslegendre", internal_batch_size=a.batch_size)
            return self.rows

        return run

    # ---- the limit: the model alone on as many rows at the same batch size
    def limit(self, rows: int, batch: int, backward: bool) -> Callable[[], None]:
        """The model alone on ``rows`` rows in batches of ``batch`` (forward, or forward and
        backward to the inputs)."""
        return limit_fn(self.model, self.x, rows, batch, backward)


def limit_fn(model: Any, x: torch.Tensor, rows: int, batch: int,
             backward: bool = False) -> Callable[[], None]:
    full, rest = divmod(rows, batch)
    blocks = [(x[torch.arange(size) % len(x)].clone().requires_grad_(backward), count)
              for size, count in ((batch, full), (rest, 1)) if size and count]

    def run() -> None:
        with torch.set_grad_enabled(backward):
            for xb, count in blocks:
                for _ in range(count):
                    out = model.forward(xb, validate=False)
                    if backward:
                        torch.softmax(out, 1)[:, 0].sum().backward()

    return run


def best_pair(fn: Callable[[], Any], limit: Callable[[], Any], device: str
              ) -> tuple[float, float]:
    """Best times of ``fn`` and ``limit``, run alternately (after one warm-up of ``limit``;
    ``fn`` was warmed up by the caller), so that both see the same load on a shared machine."""
    limit()
    t_fn, t_lim = [], []
    for _ in range(REPEATS[0]):
        for f, ts in ((fn, t_fn), (limit, t_lim)):
            sync(device)
            t0 = time.perf_counter()
            f()
            sync(device)
            ts.append(time.perf_counter() - t0)
    return min(t_fn), min(t_lim)


def run_one(a: argparse.Namespace, spec: str) -> dict[str, Any]:
    """Time one case in this process: 'method:impl:precision[:ppe]'."""
    method, impl, precision, *rest = spec.split(":")
    ppe = int(rest[0]) if rest else 0
    if method == "cheap":
        return run_cheap(a)
    s = Setup(a, precision)
    cuda = a.device.startswith("cuda")
    fn = s.calix(method) if impl == "calix" else s.captum(method, ppe)
    rss_before = rss_mib()
    if cuda:
        sync(a.device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rows = fn()  # warm-up, the row count and the peak memory
    sync(a.device)
    peak = ((torch.cuda.max_memory_allocated() - base) / 2**20 if cuda else rss_mib())
    if impl == "calix" or method in ("occlusion", "ig"):
        batch = a.batch_size if method != "occlusion" or impl == "calix" else (
            max(1, a.batch_size // a.images) * a.images)
    else:
        batch = ppe
    t, lim = best_pair(fn, s.limit(rows, batch, backward=method == "ig"), a.device)
    return dict(method=method, impl=impl, precision=precision, ppe=ppe, time=t, rows=rows,
                limit=lim, peak=peak, rss_before=rss_before, cuda=cuda)


def run_cheap(a: argparse.Namespace) -> dict[str, Any]:
    """KernelSHAP on eight photos with a model far cheaper than building its inputs."""
    from calix.explain import KernelSHAP
    from calix.models import wrap
    from calix.perturb import Constant, Superpixels

    torch.manual_seed(0)
    size = 224
    module = torch.nn.Sequential(torch.nn.AvgPool2d(8), torch.nn.Flatten(),
                                 torch.nn.Linear(3 * (size // 8) ** 2, 10)).eval()
    model = wrap(module, batch_size=a.batch_size)
    x = photos(8, size)
    feats = Superpixels(a.segments, compactness=10.0)
    feats.segment(x)
    rss_before = rss_mib()
    e = KernelSHAP(model, features=feats, fill=Constant(0.0), n_samples=a.cheap_budget)
    rows = int(e.explain(x).n_queries)  # warm-up, the row count and the peak memory
    peak = rss_mib()
    with torch.no_grad():
        t, lim = best_pair(lambda: e.explain(x), limit_fn(model, x, rows, a.batch_size), "cpu")
    return dict(method="cheap", impl="calix", precision="fp32", ppe=0, time=t, rows=rows,
                limit=lim, peak=peak, rss_before=rss_before, cuda=False)


# ---------------------------------------------------------------------- driver
def specs(a: argparse.Namespace) -> list[str]:
    out = []
    for precision in a.precisions:
        for method, impl in CASES:
            if a.methods is not None and method not in a.methods:
                continue
            if impl == "captum" and a.no_captum:
                continue
            if impl == "captum" and method in ("kernel_shap", "lime"):
                out += [f"{method}:{impl}:{precision}:{p}" for p in a.ppe_list]
            else:
                out.append(f"{method}:{impl}:{precision}")
    return out


def in_subprocess(spec: str, argv: list[str], timeout: float) -> dict[str, Any] | str:
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--one", spec]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                             check=False)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f} s"
    for line in res.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
    return f"failed (exit {res.returncode}): {tail[0][:120]}"


def slic_header(a: argparse.Namespace) -> str:
    from calix.perturb import Superpixels

    x = photos(a.images, a.size)
    Superpixels.clear_cache()
    serial = Superpixels(a.segments, compactness=10.0, n_jobs=1, cache=False)
    threads = Superpixels(a.segments, compactness=10.0, cache=False)
    cached = Superpixels(a.segments, compactness=10.0)
    t1 = best_of(lambda: serial.segment(x), "cpu")
    tn = best_of(lambda: threads.segment(x), "cpu")
    tc = best_of(lambda: cached.segment(x), "cpu")
    d = serial.segment(x).n_features.tolist()
    return (f"SLIC ({a.segments} segments asked, got {min(d)}-{max(d)}) on {len(x)} photos: "
            f"{t1 * 1e3:.0f} ms serial, {tn * 1e3:.0f} ms on {threads._workers(len(x))} "
            f"threads, {tc * 1e3:.1f} ms cached")


def fmt_row(r: dict[str, Any]) -> str:
    name = r["method"] if not r["ppe"] else f"{r['method']} ppe={r['ppe']}"
    mem = (f"{r['peak']:9.0f}" if r["cuda"]
           else f"{r['peak']:9.0f} {r['peak'] - r['rss_before']:+8.0f}")
    return (f"{name:<20}{r['impl']:<8}{r['precision']:<6}{r['time']:9.2f}{r['rows']:9d}"
            f"{r['limit']:9.2f}{r['time'] / r['limit']:8.2f}{mem}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    a = parse(argv)
    if a.one is not None:
        print("RESULT " + json.dumps(run_one(a, a.one)), flush=True)
        return
    cuda = a.device.startswith("cuda")
    isolate = not cuda  # peak RSS needs one process per case
    dev = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__} on {dev}; {a.arch} (width {a.width}), {a.images} photos "
          f"{a.size}x{a.size}, batch {a.batch_size}; {a.budget} coalitions, "
          f"{a.rise_masks} RISE masks, {a.ig_steps} IG steps, {a.patch}-px occlusion patches")
    results: list[dict[str, Any]] = []
    if not a.only_cheap:
        print(slic_header(a))
        mem = "peak MiB" if cuda else " RSS MiB   +case"
        print(f"time: best of {REPEATS[0]} after a warm-up (s); limit: the model alone on the "
              "same rows at the same batch size (IG: forward + backward)")
        print(f"{'method':<20}{'impl':<8}{'prec':<6}{'time s':>9}{'rows':>9}{'limit s':>9}"
              f"{'ratio':>8}{mem:>17}")
        for spec in specs(a):
            r = in_subprocess(spec, argv, a.timeout) if isolate else run_one(a, spec)
            if isinstance(r, str):
                print(f"{spec:<34}{r}")
                continue
            results.append(r)
            print(fmt_row(r), flush=True)
        summarize(results)
    if not a.no_cheap:
        r = in_subprocess("cheap:calix:fp32", argv, a.timeout)
        if isinstance(r, str):
            print(f"cheap model: {r}")
        else:
            print(f"cheap model (8x8 pool + linear), 8 photos 224x224 x {a.cheap_budget} "
                  f"coalitions, calix KernelSHAP on SLIC, batch {a.batch_size}: "
                  f"{r['time']:.2f} s for {r['rows']} rows, forward-only limit "
                  f"{r['limit']:.2f} s, ratio {r['time'] / r['limit']:.1f}; peak RSS "
                  f"{r['peak']:.0f} MiB ({r['peak'] - r['rss_before']:+.0f} MiB over the "
                  f"RSS after setup; the rows themselves would take "
                  f"{r['rows'] * 3 * 224 * 224 * 4 / 2**20:.0f} MiB)")


def summarize(results: list[dict[str, Any]]) -> None:
    """calix against the fastest Captum configuration of the same method and precision."""
    lines = []
    for r in results:
        if r["impl"] != "calix":
            continue
        peers = [p for p in results if p["impl"] == "captum" and p["method"] == r["method"]
                 and p["precision"] == r["precision"]]
        if peers:
            best = min(peers, key=lambda p: p["time"])
            extra = f" (ppe={best['ppe']})" if best["ppe"] else ""
            lines.append(f"  {r['method']:<12}{r['precision']:<6}calix {r['time']:.2f} s, "
                         f"Captum{extra} {best['time']:.2f} s: "
                         f"{best['time'] / r['time']:.1f}x")
    for prec in ("bf16", "fp16"):
        for r in results:
            if r["precision"] != prec or r["impl"] != "calix":
                continue
            ref = [p for p in results if p["impl"] == "calix" and p["method"] == r["method"]
                   and p["precision"] == "fp32"]
            if ref:
                lines.append(f"  {r['method']:<12}calix {prec} / fp32 time: "
                             f"{r['time'] / ref[0]['time']:.2f}")
    if lines:
        print("calix against Captum (Captum time / calix time), and mixed precision:")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
