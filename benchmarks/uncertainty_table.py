"""Uncertainty of explanations on digits: four samplers x three explainers, one table.

Model: the zoo CNN on digits (1x8x8, dropout 0.25 after pooling and after the hidden layer,
``zoo.train("cnn", "digits", seed=0)``). Samplers (``calix.uncertainty``):

- MC-Dropout, ``MCDropout(model, n_samples=30)`` (batched: one explainer call on the inputs
  repeated 30 times, every row its own dropout masks);
- MC-DropConnect, ``MCDropConnect(model, n_samples=30, p=0.1)`` on every Conv2d / Linear weight
  (30 explainer calls, one masked weight set each; the module's dropout stays off);
- a deep ensemble of 5 zoo CNNs, ``train_ensemble("cnn", "digits", n_members=5)`` (seeds 0..4):
  T = 5 samples, not 30;
- Flipout, ``train_flipout("cnn", "digits", seed=0)`` (the CNN with Bayesian Flipout layers,
  dropout 0, trained by ELBO; not cached, a few seconds) sampled by ``Flipout(model,
  n_samples=30)`` (batched like MC-Dropout).

Explainers: Guided Backprop; Integrated Gradients (``n_steps=30``, zero baseline); LIME
(``n_samples=500``; its default features on 8x8 images are the 64 single pixels, zero fill).
All explain the softmax probability of the class predicted by the mean of the samples (the
default target of :func:`~calix.uncertainty.explanation_distribution`), on the first 50 test
images.

Columns: mean CV = ``mean_cv(dist).mean()`` (the guarded E_σ / |E_μ| per pixel, averaged over
the pixels where it is defined, then over images; lower = less uncertain); deletion and
insertion AUC (``distribution_curves(model, x, dist, steps=32)``, zero fill, probability of the
target normalised by the clean one) for pixels ranked by the mean map E_μ and by the std map
E_σ. Deletion: lower is better; insertion: higher is better. The curves run on a deterministic
model: the zoo CNN in eval mode for MC-Dropout / DropConnect, the first member for the
ensemble, the Flipout model on its mean weights for Flipout. ``time`` is the wall time of the
``explanation_distribution`` call (T explanations of the 50 images and the predictive pass
that picks the target; each explainer is warmed up once, untimed, before the table); curves are
not included.

Two checks follow the table (computed, not assumed): LIME's mean CV under
``MCDropout(model, p=0)``, a deterministic model (every sample reuses LIME's seed, so LIME's
own sampling noise must not show up as model uncertainty), and the IG completeness gap inside
one sampled network of MC-Dropout and of Flipout (multi-row explainers get whole sampled
networks, so the path never crosses networks). The last line
names the explainer with the lowest mean CV per sampler and says whether Guided Backprop is the
least uncertain overall (the claim of the paper): "overall" = the lowest mean rank over the four
samplers (ties broken by the mean CV).

Captum's "Internal batch size cannot be less than the number of input examples" warning (IG
on the 1500 rows of a batched sampler, more than the model's batch size of 1024) is silenced.
Takes under a minute on 2 idle CPU cores with the zoo cache warm (50 s measured; about a
minute more to train the six CNNs on a cold cache); other load on the machine skews the times.

Run: CALIX_CACHE=/tmp/u-cache .venv/bin/python benchmarks/uncertainty_table.py
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from calix import zoo
from calix.explain import LIME, GuidedBackprop, IntegratedGradients
from calix.uncertainty import (
    Flipout,
    MCDropConnect,
    MCDropout,
    Sampler,
    distribution_curves,
    explanation_distribution,
    mean_cv,
    train_ensemble,
    train_flipout,
)

N_IMAGES = 50  # first test images
N_LIME = 50  # images for LIME (all of them: LIME x T = 30 takes well under a minute)
T = 30
N_MEMBERS = 5
STEPS = 32  # deletion / insertion steps
IG_STEPS = 30
LIME_SAMPLES = 500
DROPCONNECT_P = 0.1

EXPLAINERS: dict[str, Callable[[Any], Any]] = {
    "Guided Backprop": lambda m: GuidedBackprop(m),
    "Integrated Gradients": lambda m: IntegratedGradients(m, n_steps=IG_STEPS, baselines="zero"),
    "LIME": lambda m: LIME(m, n_samples=LIME_SAMPLES),
}


def accuracy(model: Any, X: np.ndarray, y: np.ndarray) -> float:
    return float((model.predict(X) == y).mean())


def cell(sampler: Sampler, make: Callable[[Any], Any], x: torch.Tensor,
         curve_model: Any) -> dict[str, Any]:
    """One sampler x explainer: the distribution, its CV and the four curve AUCs."""
    t0 = time.perf_counter()
    dist = explanation_distribution(make, sampler, x)
    wall = time.perf_counter() - t0
    curves = distribution_curves(curve_model, x, dist, steps=STEPS)
    aucs = {k: float(c.auc.mean()) for k, c in curves.items()}
    arrays = [dist.values, dist.std, dist.extra["cv"], mean_cv(dist),
              *(c.auc for c in curves.values())]
    bad = sum(int((~np.isfinite(a)).sum()) for a in arrays)
    return {"cv": float(mean_cv(dist).mean()), "time": wall, "n": len(x), "nonfinite": bad,
            "target": dist.target, **aucs}


def ig_gap(model: Any, x: torch.Tensor, target: np.ndarray) -> float:
    """Mean |completeness gap| / mean |s(x) - s(0)| of IG on ``model`` (inside any context)."""
    exp = IntegratedGradients(model, n_steps=IG_STEPS, baselines="zero").explain(x, target)
    gap = np.abs(exp.extra["delta"]).mean()
    return float(gap / np.abs(exp.values.reshape(len(x), -1).sum(1) - exp.extra["delta"]).mean())


def main() -> None:
    torch.manual_seed(0)
    warnings.filterwarnings("ignore", message="Internal batch size cannot be less")
    t_start = time.perf_counter()
    trained = zoo.train("cnn", "digits", seed=0)
    ds = trained.dataset
    model = trained.wrap()
    ensemble = train_ensemble("cnn", "digits", n_members=N_MEMBERS)
    flip = train_flipout("cnn", "digits", seed=0)
    x = torch.as_tensor(ds.X_test[:N_IMAGES])
    t_models = time.perf_counter() - t_start

    accs = [accuracy(m, ds.X_test, ds.y_test) for m in ensemble.members]
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads); digits 1x8x8, "
          f"{N_IMAGES} test images ({N_LIME} for LIME); models ready in {t_models:.0f} s")
    print(f"test accuracy: zoo CNN (dropout {trained.config['dropout']}) "
          f"{accuracy(model, ds.X_test, ds.y_test):.3f}; ensemble members "
          f"{min(accs):.3f}-{max(accs):.3f}; Flipout CNN (mean weights) "
          f"{accuracy(flip, ds.X_test, ds.y_test):.3f}")
    print(f"explainers: Guided Backprop; IG (n_steps={IG_STEPS}, zero baseline); LIME "
          f"(n_samples={LIME_SAMPLES}, 64 single-pixel features, zero fill)")
    print("target: the class predicted by the mean of the samples; del / ins: deletion (lower "
          "is better) /\ninsertion (higher is better) AUC, "
          f"{STEPS} steps, zero fill, on the deterministic model, pixels ranked\nby E_mu "
          "(mean map) or E_sig (std map); time: the explanation_distribution call")

    samplers: list[tuple[str, Sampler, Any]] = [
        ("MC-Dropout", MCDropout(model, n_samples=T), model),
        ("MC-DropConnect", MCDropConnect(model, n_samples=T, p=DROPCONNECT_P), model),
        ("Deep ensemble", ensemble, ensemble.members[0]),
        ("Flipout", Flipout(flip, n_samples=T), flip),
    ]
    for make in EXPLAINERS.values():  # untimed warm-up (imports, first-call costs)
        make(model).explain(x[:2])
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    head = (f"{'sampler':<16}{'T':>3}  {'explainer':<21}{'imgs':>5}{'mean CV':>9}"
            f"{'del E_mu':>10}{'ins E_mu':>10}{'del E_sig':>11}{'ins E_sig':>11}{'time s':>8}")
    print("\n" + head + "\n" + "-" * len(head))
    for s_name, sampler, curve_model in samplers:
        for e_name, make in EXPLAINERS.items():
            xs = x[:N_LIME] if e_name == "LIME" else x
            r = cell(sampler, make, xs, curve_model)
            rows[s_name, e_name] = r
            print(f"{s_name:<16}{sampler.n_samples:>3}  {e_name:<21}{r['n']:>5}{r['cv']:9.3f}"
                  f"{r['deletion_mean']:10.3f}{r['insertion_mean']:10.3f}"
                  f"{r['deletion_std']:11.3f}{r['insertion_std']:11.3f}{r['time']:8.2f}")
    print("-" * len(head))
    print(f"(the deep ensemble has T = {N_MEMBERS} samples: one per member, not {T})")

    # ------------------------------------------------------------------ checks
    bad = {k: r["nonfinite"] for k, r in rows.items() if r["nonfinite"]}
    print("\nchecks")
    print(f"  non-finite values in maps, CVs or AUCs: "
          f"{'none' if not bad else ', '.join(f'{s}/{e}: {n}' for (s, e), n in bad.items())}")
    floor = cell(MCDropout(model, n_samples=T, p=0.0), EXPLAINERS["LIME"], x[:N_LIME], model)
    print(f"  LIME under MCDropout(p=0), a deterministic model: mean CV {floor['cv']:.3f} "
          "(should be 0: LIME's own\n    sampling noise is not counted as model uncertainty)")
    tgt = rows["MC-Dropout", "Integrated Gradients"]["target"]
    g_det = ig_gap(model, x, tgt)
    gaps = []
    for sampler in (MCDropout(model, n_samples=1), Flipout(flip, n_samples=1)):
        gen = sampler.models()
        gaps.append(ig_gap(next(gen), x, tgt))  # one sampled network
        gen.close()
    print(f"  IG completeness gap |sum attr - (s(x) - s(0))| / |s(x) - s(0)|: deterministic "
          f"{g_det:.3f},\n    one MC-Dropout network {gaps[0]:.3f}, one Flipout network "
          f"{gaps[1]:.3f} (the IG path stays inside one sampled network)")
    print(f"\ntotal benchmark time {time.perf_counter() - t_start:.0f} s")

    # ------------------------------------------------------------------ verdict
    names = list(EXPLAINERS)
    best, ranks = {}, {e: [] for e in names}
    for s_name, _, _ in samplers:
        cvs = {e: rows[s_name, e]["cv"] for e in names}
        best[s_name] = min(cvs, key=cvs.get)
        for rank, e in enumerate(sorted(names, key=cvs.get), start=1):
            ranks[e].append(rank)
    mean_cvs = {e: np.mean([rows[s, e]["cv"] for s, _, _ in samplers]) for e in names}
    overall = min(names, key=lambda e: (np.mean(ranks[e]), mean_cvs[e]))
    n_gbp = sum(b == "Guided Backprop" for b in best.values())
    claim = "YES" if overall == "Guided Backprop" else "NO"
    per = "; ".join(f"{s}: {e}" for s, e in best.items())
    print(f"lowest mean CV per sampler -- {per}. Guided Backprop least uncertain overall (the "
          f"paper's claim): {claim} (lowest for {n_gbp} of {len(best)} samplers; lowest mean "
          f"rank: {overall}, {np.mean(ranks[overall]):.2f})")


if __name__ == "__main__":
    main()
