"""LimeTabular against lime's LimeTabularExplainer: time and agreement on breast_cancer.

100 rows of scikit-learn's breast_cancer in raw units (every 5th row, 30 columns), each
explained for its predicted class with 5000 samples (lime's default), quartile
discretization, lime's kernel and ridge surrogate, all 30 features (lime: ``num_features=30``,
``feature_selection="none"``). Two scikit-learn models, both given the raw columns:

- ``StandardScaler`` + ``LogisticRegression`` (a pipeline),
- ``RandomForestClassifier(100, max_depth=6)``.

Timed (``time.perf_counter``, one run each): lime explaining the rows one by one (as its API
does), calix's :class:`~calix.explain.lime_tabular.LimeTabular` explaining all of them in one
call, with the model wrapped at its default ``batch_size`` (1024 rows per ``predict_proba``)
and at ``batch_size=65536``; the ratio is lime's time over calix's.

Agreement, per row over the 30 attributions (Pearson r, Spearman ρ, and max |Δ| / max |φ_lime|),
mean and worst over the rows, against lime with seed 0:

- lime with seed 1 (lime's own seed-to-seed spread: the floor any reimplementation can reach),
- calix LimeTabular (seed 0),
- calix's LIME (binary removal to the training mean, ``background=X``, 5000 samples): the
  image-style sampler that motivated LimeTabular.

Takes about a minute on 2 CPU cores (50 s measured); other load on the machine skews the times.

Run: .venv/bin/python benchmarks/lime_tabular.py
"""

from __future__ import annotations

import time
import warnings

import numpy as np
from scipy import stats

from calix.explain import LIME
from calix.explain.lime_tabular import LimeTabular
from calix.models import wrap

N_SAMPLES = 5000
ROWS = slice(0, None, 5)
N_ROWS = 100


def lime_values(explainer, predict, rows, targets) -> np.ndarray:
    d = rows.shape[1]
    out = np.zeros(rows.shape)
    for i, (row, t) in enumerate(zip(rows, targets, strict=True)):
        e = explainer.explain_instance(row, predict, labels=(int(t),), num_features=d,
                                       num_samples=N_SAMPLES)
        for j, v in e.as_map()[int(t)]:
            out[i, j] = v
    return out


def agreement(a: np.ndarray, ref: np.ndarray) -> str:
    r = np.array([stats.pearsonr(u, v)[0] for u, v in zip(a, ref, strict=True)])
    rho = np.array([stats.spearmanr(u, v)[0] for u, v in zip(a, ref, strict=True)])
    rel = np.abs(a - ref).max(1) / np.abs(ref).max(1)
    return (f"Pearson {r.mean():6.3f} (worst {r.min():6.3f})  Spearman {rho.mean():6.3f} "
            f"(worst {rho.min():6.3f})  max|Δ|/max|φ| {rel.mean():5.3f} (worst {rel.max():5.3f})")


def main() -> None:
    from lime.lime_tabular import LimeTabularExplainer
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_breast_cancer(return_X_y=True)
    rows = x[ROWS][:N_ROWS]
    models = {
        "logistic regression (pipeline)": make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=2000)).fit(x, y),
        "random forest (100 trees)": RandomForestClassifier(
            100, max_depth=6, random_state=0).fit(x, y),
    }
    print(f"breast_cancer, {len(rows)} rows x {x.shape[1]} columns, {N_SAMPLES} samples per "
          "row, predicted class\n")
    for title, clf in models.items():
        targets = clf.predict_proba(rows).argmax(1)
        print(title)
        t0 = time.perf_counter()
        lime0 = lime_values(LimeTabularExplainer(x, random_state=0, feature_selection="none"),
                            clf.predict_proba, rows, targets)
        t_lime = time.perf_counter() - t0
        lime1 = lime_values(LimeTabularExplainer(x, random_state=1, feature_selection="none"),
                            clf.predict_proba, rows, targets)
        times = {}
        for batch in (1024, 65536):
            model = wrap(clf, batch_size=batch)
            t0 = time.perf_counter()
            ours = LimeTabular(model, x, n_samples=N_SAMPLES, seed=0).explain(
                rows, target=targets).feature_values
            times[batch] = time.perf_counter() - t0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            old = LIME(clf, background=x, n_samples=N_SAMPLES, seed=0).explain(
                rows, target=targets).feature_values
        print(f"  time  lime one by one {t_lime:6.2f} s")
        for batch, t in times.items():
            print(f"        calix one call, batch_size {batch:>5} {t:6.2f} s   "
                  f"lime / calix = {t_lime / t:5.2f}x")
        print("  agreement with lime (seed 0), per row:")
        print(f"    lime seed 1         {agreement(lime1, lime0)}")
        print(f"    calix LimeTabular   {agreement(ours, lime0)}")
        print(f"    calix LIME (binary) {agreement(old, lime0)}")
        print()


if __name__ == "__main__":
    main()
