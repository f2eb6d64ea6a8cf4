"""Calibration metrics: calix against the peer libraries on the same probabilities.

Data: the zoo CNN on digits-noisy (seed 0, 10 classes) and its held-out test split, 360
images. ``clean``: the model's probabilities on them. ``perturbed``: 20 perturbations of
each (4x4 patches, zero fill, coalitions from ``StratifiedLevels(10)``, seed 0), 7200 rows,
the inputs explainers query.

Pairs (calix | peer, same configuration):

- ``ece`` (15 equal-width bins on [0, 1], top-label) | netcal ``ECE(bins=15)``;
- ``ece`` quantile (15 equal-mass bins) | netcal ``ECE(bins=15, equal_intervals=False)``;
- ``ace`` (15 equal-mass bins, mean over non-empty bins) | netcal ``ACE(bins=15,
  equal_intervals=False)``;
- ``mce`` (15 equal-width bins) | netcal ``MCE(bins=15)``;
- ``classwise_ece`` (15 equal-width bins) | mean over classes of netcal ``ECE(bins=15)`` on
  (p_c, 1[y = c]);
- ``smooth_ece`` (fixed-point bandwidth) | relplot ``smECE`` on (top-label confidence,
  correctness);
- ``calibration_loss`` / ``refinement_loss`` of log-loss and Brier (in-sample ts-mix) |
  probmetrics ``calib-err_{logloss,brier}_ts-mix_all`` and ``refinement_...`` (one
  probmetrics call computes all four; timed once per loss for calix);
- ``calibration_interval`` of ``ece`` and ``smooth_ece`` (1000 resamples) | the peer metric
  called on each of the same 1000 resamples (netcal ECE, relplot smECE), the same percentiles;
- ``skce`` and ``skce_test`` (200 resamples): no Python peer (the reference implementation is
  the Julia package CalibrationErrors.jl); calix only, on at most 2000 rows.

Times: best wall time of up to 5 runs after one warm-up, calix and peer taking turns; ratio =
peer time / calix time (> 1: calix faster). Memory: the increase of peak resident memory while
one call runs in a forked child (after a warm-up call in the parent), in MiB; the parent's
free heap pages are handed back (malloc_trim) before each fork, so memory the child reuses
still counts. It counts numpy, torch and library buffers alike. Torch runs on one thread (a
forked child cannot use an OpenMP pool its parent started).
Agreement: |calix − peer|.
Results: benchmarks/results/calibration_metrics.txt.

Run: .venv/bin/python benchmarks/calibration_metrics.py
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from calix import zoo
from calix.metrics import (
    ace,
    calibration_interval,
    classwise_ece,
    ece,
    loss_decomposition,
    mce,
    skce,
    skce_test,
    smooth_ece,
)
from calix.metrics.calibration import _resamples
from calix.perturb import Constant, PatchGrid, Perturbation, StratifiedLevels

OUT = Path(__file__).parent / "results" / "calibration_metrics.txt"
N_BOOT = 1000
N_PERTURB = 20


def load() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    trained = zoo.train("cnn", "digits-noisy", seed=0)
    ds, model = trained.dataset, trained.wrap()
    x, y = torch.as_tensor(ds.X_test), np.asarray(ds.y_test)
    clean = model.predict_proba(x).astype(np.float64)
    engine = Perturbation(PatchGrid(4), Constant(0.0))
    masks = StratifiedLevels(10).sample(N_PERTURB, engine.n_features(x), seed=0)
    res = engine.query(model, x, masks)
    pert = torch.softmax(res.outputs.double(), dim=-1).reshape(-1, clean.shape[1]).numpy()
    return {"clean": (clean, y), "perturbed": (pert, np.repeat(y, N_PERTURB))}


def best_of(fns: dict[str, Callable[[], Any]], repeats: int = 5, slow_s: float = 20.0
            ) -> dict[str, float]:
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        if time.perf_counter() - start > slow_s:
            break
    return {name: min(ts) for name, ts in times.items()}


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _child(fn: Callable[[], Any], q: Any) -> None:
    before = _rss_mib()
    fn()
    q.put(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before)


def peak_mib(fn: Callable[[], Any]) -> float:
    """Peak resident memory added by one call of ``fn``, in a forked child."""
    import ctypes

    # hand the parent's free heap pages back to the system before forking: the child reuses
    # those free chunks, and they must fault in fresh pages to count in its peak
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, q))
    proc.start()
    try:
        out = q.get(timeout=600)
    except Exception:  # a child that never reports: no number rather than a hang
        proc.terminate()
        return float("nan")
    proc.join()
    return max(float(out), 0.0)


def peers(p: np.ndarray, y: np.ndarray) -> list[tuple[str, Callable[[], Any], Any, str]]:
    """(label, calix call, peer call or None, peer name) for one data set."""
    import relplot
    from netcal.metrics import ACE, ECE, MCE
    from probmetrics.metrics import Metrics

    conf, hit = p.max(1), (p.argmax(1) == y).astype(np.float64)
    pm_names = [f"{part}_{loss}_ts-mix_all" for part in ("calib-err", "refinement")
                for loss in ("logloss", "brier")]
    pm = Metrics.from_names(pm_names)

    def probmetrics_all() -> dict[str, float]:
        out = pm.compute_all_from_labels_probs(torch.as_tensor(y), torch.as_tensor(p))
        return {k: float(v) for k, v in out.items()}

    def decomposition(loss: str) -> Callable[[], tuple[float, float]]:
        def run() -> tuple[float, float]:
            d = loss_decomposition(p, y, loss=loss)
            return d.calibration, d.refinement
        return run

    def pm_pair(loss: str) -> Callable[[], tuple[float, float]]:
        def run() -> tuple[float, float]:
            r = probmetrics_all()
            return r[f"calib-err_{loss}_ts-mix_all"], r[f"refinement_{loss}_ts-mix_all"]
        return run

    resamples = np.concatenate(list(_resamples(len(p), N_BOOT, N_BOOT, seed=0)))

    def looped(metric: Callable[[np.ndarray], float]) -> Callable[[], tuple[float, ...]]:
        def run() -> tuple[float, ...]:
            vals = np.array([metric(i) for i in resamples])
            lo, hi = np.quantile(vals, [0.025, 0.975])
            return float(lo), float(hi)
        return run

    def interval(metric: Callable[..., float]) -> Callable[[], tuple[float, ...]]:
        def run() -> tuple[float, ...]:
            ci = calibration_interval(metric, p, y, n_boot=N_BOOT, seed=0)
            return ci.lower, ci.upper
        return run

    sub = slice(0, 2000)
    return [
        ("ece (15 uniform bins)", lambda: ece(p, y), lambda: ECE(bins=15).measure(p, y),
         "netcal ECE"),
        ("ece (15 equal-mass bins)", lambda: ece(p, y, strategy="quantile"),
         lambda: ECE(bins=15, equal_intervals=False).measure(p, y), "netcal ECE eq-mass"),
        ("ace (15 equal-mass bins)", lambda: ace(p, y),
         lambda: ACE(bins=15, equal_intervals=False).measure(p, y), "netcal ACE eq-mass"),
        ("mce (15 uniform bins)", lambda: mce(p, y), lambda: MCE(bins=15).measure(p, y),
         "netcal MCE"),
        ("classwise_ece (15 bins)", lambda: classwise_ece(p, y),
         lambda: np.mean([ECE(bins=15).measure(p[:, c], (y == c).astype(int))
                          for c in range(p.shape[1])]), "netcal ECE per class"),
        ("smooth_ece (fixed point)", lambda: smooth_ece(p, y),
         lambda: relplot.smECE(conf, hit), "relplot smECE"),
        ("log-loss: calibration, refinement", decomposition("log"), pm_pair("logloss"),
         "probmetrics ts-mix_all"),
        ("Brier: calibration, refinement", decomposition("brier"), pm_pair("brier"),
         "probmetrics ts-mix_all"),
        (f"ece interval ({N_BOOT} resamples)", interval(ece),
         looped(lambda i: ECE(bins=15).measure(p[i], y[i])), "netcal ECE looped"),
        (f"smooth_ece interval ({N_BOOT})", interval(smooth_ece),
         looped(lambda i: relplot.smECE(conf[i], hit[i])), "relplot smECE looped"),
        ("skce (n <= 2000)", lambda: skce(p[sub], y[sub]), None, "-"),
        ("skce_test (200 resamples, n <= 2000)",
         lambda: (lambda r: (r.statistic, r.p_value))(skce_test(p[sub], y[sub],
                                                                n_resamples=200)), None, "-"),
    ]


def fmt(v: Any) -> str:
    if isinstance(v, tuple):
        return "(" + ", ".join(f"{x:.5f}" for x in v) + ")"
    return f"{v:.6f}"


def main() -> None:
    import warnings


    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)  # fork-safe: no OpenMP pool for the memory children to inherit
    data = load()
    lines = [f"calix calibration metrics vs peers -- zoo CNN on digits-noisy (seed 0); "
             f"clean: {len(data['clean'][0])} test rows, perturbed: "
             f"{len(data['perturbed'][0])} rows ({N_PERTURB} zero-fill perturbations each)",
             f"{'data':<10}{'metric':<38}{'calix':>22}{'peer':>22}{'|diff|':>10}"
             f"{'calix ms':>10}{'peer ms':>10}{'ratio':>7}{'MiB':>7}{'peer MiB':>9}  peer"]
    print(lines[0], flush=True)
    print(lines[1], flush=True)
    for name, (p, y) in data.items():
        for label, ours, theirs, peer in peers(p, y):
            a = ours()
            b = theirs() if theirs is not None else None
            fns = {"calix": ours} if theirs is None else {"calix": ours, "peer": theirs}
            t = best_of(fns)
            mem = peak_mib(ours)
            diff = "-" if b is None else f"{np.max(np.abs(np.subtract(a, b))):.1e}"
            row = (f"{name:<10}{label:<38}{fmt(a):>22}{fmt(b) if b is not None else '-':>22}"
                   f"{diff:>10}{1e3 * t['calix']:>10.1f}")
            if theirs is None:
                row += f"{'-':>10}{'-':>7}{mem:>7.1f}{'-':>9}  {peer}"
            else:
                row += (f"{1e3 * t['peer']:>10.1f}{t['peer'] / t['calix']:>7.1f}{mem:>7.1f}"
                        f"{peak_mib(theirs):>9.1f}  {peer}")
            print(row, flush=True)
            lines.append(row)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
