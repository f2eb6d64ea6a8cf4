"""CE_KL by perturbation level (AVG / MAX over 10 level bins) for the uncalibrated model,
temperature scaling and ReCalX: zoo CNN on digits-noisy (zero, blur, mean fills) and zoo MLP
on breast_cancer (mean, zero fills). Fit on 200 validation inputs x 10 perturbations per bin;
evaluate on 500 test inputs x 10 per bin (5000 perturbed samples per bin).

Run: .venv/bin/python benchmarks/calibration_table.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import time

from calix import zoo
from calix.recipes import compare_calibration, default_perturbation

CASES = [("cnn", "digits-noisy", ("zero", "blur", "mean")), ("mlp", "breast_cancer",
                                                              ("mean", "zero"))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--metric", default="ce_kl")
    args = ap.parse_args()
    print(f"{'model/data':<22}{'fill':<6}{'seed':>5}  "
          f"{'uncal avg/max':>15}{'TS avg/max':>15}{'ReCalX avg/max':>16}  ReCalX vs uncal MAX")
    for name, data_name, fills in CASES:
        for fill in fills:
            for seed in args.seeds:
                t0 = time.perf_counter()
                trained = zoo.train(name, data_name, seed=seed)
                ds = trained.dataset
                comp = compare_calibration(trained.wrap(), ds, default_perturbation(ds, fill),
                                           metric=args.metric, seed=seed)
                r = {row["method"]: row for row in comp.rows()}

                def fmt(m, r=r):
                    return f"{r[m]['ce_avg']:.3f}/{r[m]['ce_max']:.3f}"

                cut = 1 - r["recalx"]["ce_max"] / r["none"]["ce_max"]
                print(f"{name + '/' + data_name:<22}{fill:<6}{seed:>5}  {fmt('none'):>15}"
                      f"{fmt('temperature'):>15}{fmt('recalx'):>16}  {-cut:+.1%} "
                      f"({time.perf_counter() - t0:.0f}s)", flush=True)
                temps = [round(float(t), 2) for t in comp.calibrators["recalx"].temperatures_]
                print(f"{'':<28}T={comp.calibrators['temperature'].temperature_:.2f}; "
                      f"ReCalX T per bin {temps}", flush=True)


if __name__ == "__main__":
    main()
