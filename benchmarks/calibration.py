"""Every registered calibrator x every calibration metric, on clean and perturbed test inputs.

Cases: the zoo CNN on ``digits-noisy`` (4x4 patches, zero fill) and the zoo MLP on
``breast_cancer`` (columns, training-mean fill). Calibrators registered with ``fit_on="clean"``
are fitted on clean validation logits; ``fit_on="perturbed"`` ones (ReCalX, ``by_level_*``,
``smooth_level_temperature``) on perturbed validation samples (``n_val`` inputs x ``n_per_bin``
perturbations x 10 level bins). Test probabilities: the clean test inputs (level 0) and perturbed
test inputs drawn with another seed (all bins pooled); ``ECE^MAX`` is the largest binned ECE over
the level bins. netcal's ECE is computed on the same perturbed probabilities as a running
cross-check (``|Δ netcal|``: the largest difference over the calibrators).

Run:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/calibration.py [--quick]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from calix import zoo
from calix.calibrate import CALIBRATORS, fit_calibrator, perturbed_logits
from calix.metrics.calibration import ace, brier, classwise_ece, ece, mce, nll, smooth_ece
from calix.perturb import level_bins
from calix.recipes import default_perturbation

CASES = [("cnn", "digits-noisy", "zero"), ("mlp", "breast_cancer", "mean")]
METRICS = {"ECE": ece, "ACE": ace, "MCE": mce, "cwECE": classwise_ece, "smECE": smooth_ece,
           "NLL": nll, "Brier": brier}
N_BINS = 10


def _probs(cal, z: torch.Tensor, levels: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        out = z if cal is None else cal(z, levels)
    return torch.softmax(out.double(), -1).cpu().numpy()


def _netcal_ece(p: np.ndarray, y: np.ndarray) -> float:
    from netcal.metrics import ECE

    return float(ECE(bins=15).measure(p, y))


def run_case(name: str, data: str, fill: str, *, n_val: int, n_test: int, n_per_bin: int,
             skip: set[str]) -> list[dict]:
    trained = zoo.train(name, data, seed=0)
    ds, model = trained.dataset, trained.wrap()
    engine = default_perturbation(ds, fill)
    z_clean = model.forward(ds.X_test, grad=False).cpu()
    y_clean = np.asarray(ds.y_test)
    zp, yp, lp = perturbed_logits(model, ds.X_test, ds.y_test, engine, n_samples=n_test,
                                  n_per_bin=n_per_bin, n_bins=N_BINS, seed=1)
    zp, yp, lp = zp.cpu(), yp.cpu().numpy(), lp.cpu()
    bins = level_bins(lp, N_BINS).cpu().numpy()
    rows = []
    for cal_name in ["none", *CALIBRATORS.names()]:
        if cal_name in skip:
            continue
        t0 = time.perf_counter()
        cal = None
        if cal_name != "none":
            cal = fit_calibrator(cal_name, model, ds.X_val, ds.y_val, perturbation=engine,
                                 n_bins=N_BINS, n_samples=n_val, n_per_bin=n_per_bin, seed=0)
        fit_s = time.perf_counter() - t0
        pc = _probs(cal, z_clean, torch.zeros(len(z_clean)))
        pp = _probs(cal, zp, lp)
        row = {"calibrator": cal_name, "fit_s": fit_s}
        for key, fn in METRICS.items():
            row[f"clean {key}"] = fn(pc, y_clean)
            row[f"perturbed {key}"] = fn(pp, yp)
        row["ECE^MAX"] = max(ece(pp[bins == b], yp[bins == b]) for b in np.unique(bins))
        # netcal scores p(class 1) of a binary problem where calix scores the top label, so
        # the cross-check runs on multi-class cases only
        row["netcal_gap"] = (abs(_netcal_ece(pp, yp) - ece(pp, yp, n_bins=15))
                             if pp.shape[1] > 2 else float("nan"))
        rows.append(row)
    return rows


def print_rows(title: str, rows: list[dict]) -> None:
    print(f"\n=== {title}")
    keys = [k for k in rows[0] if k not in ("calibrator", "fit_s", "netcal_gap")]
    for part in ("clean", "perturbed"):
        cols = [k for k in keys if k.startswith(part)] + (["ECE^MAX"] if part == "perturbed"
                                                          else [])
        print(f"  {part} test inputs" + ("" if part == "clean" else ", all level bins pooled"))
        print("    " + f"{'calibrator':<28}" + "".join(f"{c.split(' ')[-1]:>9}" for c in cols)
              + ("   fit s" if part == "perturbed" else ""))
        best = {c: min(r[c] for r in rows) for c in cols}
        for r in rows:
            cells = "".join(f"{r[c]:>8.4f}{'*' if r[c] == best[c] else ' '}" for c in cols)
            tail = f"{r['fit_s']:>8.1f}" if part == "perturbed" else ""
            print(f"    {r['calibrator']:<28}{cells}{tail}")
    gap = max(r["netcal_gap"] for r in rows)
    print(f"  |Δ netcal| (15-bin ECE, perturbed): "
          f"{'n/a (binary)' if gap != gap else f'{gap:.1e}'}   * lowest in its column")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="fewer inputs; leaves out the slowest fits (matrix and Dirichlet per "
                         "level bin)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    sizes = dict(n_val=60, n_test=60, n_per_bin=3) if args.quick else dict(
        n_val=200, n_test=200, n_per_bin=10)
    skip = {"by_level_matrix", "by_level_dirichlet"} if args.quick else set()
    print(f"torch {torch.__version__} (1 thread); {'quick' if args.quick else 'full'}: "
          f"{sizes}; {N_BINS} level bins")
    t0 = time.perf_counter()
    for name, data, fill in CASES:
        rows = run_case(name, data, fill, skip=skip, **sizes)
        print_rows(f"{name} on {data}, {fill} fill", rows)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
