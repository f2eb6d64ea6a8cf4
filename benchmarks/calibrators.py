"""CE_KL^MAX by perturbation level for every perturbation-aware calibrator: zoo CNN on
digits-noisy, zero fill (4x4 patches), ReCalX's protocol as in benchmarks/calibration_table.py
(fit on 200 validation inputs x 10 perturbations per level bin, 10 bins; evaluate with
calix.procedures.calibration_by_level on the test inputs x 10 per bin, another seed).

Rows: uncalibrated, temperature scaling, ReCalX, ByLevel(each calibrator), and
SmoothLevelTemperature (spline and linear). Then the same fit with 5x fewer validation inputs
(40): how much of ReCalX's full-data reduction of CE^MAX each level-aware method keeps.
Every level-aware calibrator is fitted on the same perturbed validation logits (those
``fit_perturbed`` would draw with the same seed). Prints one table and the peak memory.

Run: .venv/bin/python benchmarks/calibrators.py [--seed 0] [--fill zero]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import warnings

import torch

from calix import zoo
from calix.calibrate import CALIBRATORS as REG
from calix.calibrate import (
    ByLevel,
    CalibratedModel,
    SmoothLevelTemperature,
    TemperatureScaling,
    perturbed_logits,
)
from calix.procedures import calibration_by_level
from calix.recipes import default_perturbation

N_BINS, N_PER_BIN, N_FIT, N_EVAL = 10, 10, 200, 500
#: the clean calibrators ByLevel wraps (every registered one but temperature: that is ReCalX)
#: strengths fixed instead of cross-validated per bin (25 strength pairs x 3 folds in each of
#: 10 bins: 75 times the fit, over 10 minutes on 2 shared cores): Calibrate-to-Interpret's 1e-2
FIXED = {"matrix": {"reg_lambda": 1e-2, "reg_mu": 1e-2},
         "dirichlet": {"reg_lambda": 1e-2, "reg_mu": 1e-2}}
INNER = ("vector", "matrix", "structured_matrix", "dirichlet", "platt_scaling", "beta",
         "histogram", "isotonic", "venn_abers")


def _makers(seed: int) -> dict[str, object]:
    """name -> a function that builds the unfitted level-aware calibrator."""
    makers = {"recalx": lambda: REG["recalx"](N_BINS)}
    for name in INNER:
        kw = {"seed": seed} if REG.meta(name)["seeded"] else {}
        if name in FIXED:
            kw = FIXED[name]
        makers[f"by_level_{name}"] = (lambda name=name, kw=kw:
                                      ByLevel(REG[name](**kw), N_BINS))
    makers["smooth_level_temperature"] = lambda: SmoothLevelTemperature(N_BINS)
    makers["smooth_level_temperature (linear)"] = lambda: SmoothLevelTemperature(
        N_BINS, basis="linear")
    return makers


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fill", default="zero")
    args = ap.parse_args()
    seed = args.seed
    torch.manual_seed(seed)
    trained = zoo.train("cnn", "digits-noisy", seed=seed)
    ds = trained.dataset
    model = trained.wrap()
    pert = default_perturbation(ds, args.fill)
    print(f"cnn/digits-noisy, {args.fill} fill, seed {seed}: fit on {N_FIT} validation inputs x "
          f"{N_PER_BIN} per bin x {N_BINS} bins; CE_KL by level on {min(N_EVAL, len(ds.X_test))}"
          f" test inputs x {N_PER_BIN} per bin", flush=True)

    def evaluate(m) -> tuple[float, float]:
        lc = calibration_by_level(m, ds.X_test, ds.y_test, pert, n_bins=N_BINS,
                                  n_samples=N_EVAL, n_per_bin=N_PER_BIN, metric="ce_kl",
                                  seed=seed + 1)
        return lc.avg, lc.max

    rows: list[tuple] = []  # name, CE avg, CE max, fit seconds, CE max with 5x fewer, -
    t0 = time.perf_counter()
    base = evaluate(model)
    rows.append(("uncalibrated", *base, 0.0, float("nan"), float("nan")))
    print(f"  uncalibrated {base[1]:.4f} ({time.perf_counter() - t0:.0f}s)", flush=True)

    t0 = time.perf_counter()
    ts = TemperatureScaling().fit(model.forward(ds.X_val, grad=False), ds.y_val)
    fit_s = time.perf_counter() - t0
    rows.append(("temperature", *evaluate(CalibratedModel(model, ts)), fit_s, float("nan"),
                 float("nan")))

    data = {}
    for n_fit in (N_FIT, N_FIT // 5):
        data[n_fit] = perturbed_logits(model, ds.X_val, ds.y_val, pert, n_samples=n_fit,
                                       n_per_bin=N_PER_BIN, n_bins=N_BINS, seed=seed)
    small: dict[str, float] = {}
    for name, make in _makers(seed).items():
        res = {}
        for n_fit in (N_FIT, N_FIT // 5):
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pooled bins are reported by sources_
                cal = make().fit(*data[n_fit])
            fit_s = time.perf_counter() - t0
            res[n_fit] = (*evaluate(CalibratedModel(model, cal)), fit_s)
        small[name] = res.get(N_FIT // 5, (float("nan"),) * 3)[1]
        avg, mx, fit_s = res[N_FIT]
        rows.append((name, avg, mx, fit_s, small[name], float("nan")))
        print(f"  {name} {mx:.4f} / 5x fewer {small[name]:.4f} (fit {fit_s:.1f}s)", flush=True)

    full_cut = base[1] - dict((r[0], r[2]) for r in rows)["recalx"]
    print()
    print(f"{'method':<36}{'CE avg':>9}{'CE max':>9}{'vs uncal':>10}{'fit s':>8}"
          f"{'max, 40 inputs':>16}{'x full':>8}{'kept':>8}")
    for name, avg, mx, fit_s, mx_small, _ in rows:
        kept = (base[1] - mx_small) / full_cut if mx_small == mx_small else float("nan")
        s_small = f"{mx_small:.4f}" if mx_small == mx_small else "-"
        s_kept = f"{kept:.1%}" if kept == kept else "-"
        s_ratio = f"{mx_small / mx:.2f}" if mx_small == mx_small else "-"
        print(f"{name:<36}{avg:>9.4f}{mx:>9.4f}{mx / base[1] - 1:>+10.1%}{fit_s:>8.1f}"
              f"{s_small:>16}{s_ratio:>8}{s_kept:>8}")
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"\n'x full': CE^MAX fitted on {N_FIT // 5} inputs / fitted on {N_FIT}. "
          f"'kept': share of ReCalX's full-data CE^MAX reduction ({base[1]:.4f} -> "
          f"{base[1] - full_cut:.4f}) that the fit on {N_FIT // 5} validation inputs keeps.")
    print(f"peak resident memory {peak_kib / 1024:.0f} MiB (process); torch "
          f"{torch.__version__}, {sys.platform}")


if __name__ == "__main__":
    main()
