"""Feature Perturbation Augmentation (FPA): MIF / LIF fidelity of gradient importance maps for
models trained with and without perturbed inputs.

Reproduces the testable claims of Brocki & Chung, "Feature Perturbation Augmentation for
Reliable Evaluation of Importance Estimators in Neural Networks" (arXiv 2303.01538) on small
CPU models: training with FPA delays the drop of the predicted logit when the most important
pixels are zeroed (MIF), makes the logit rise when the least important (most negative) pixels
are zeroed first (LIF), lets signed estimators beat unsigned ones, and
costs little accuracy, while making the model robust to zeroed pixels.

Protocol
--------
For every dataset and training seed, two zoo CNNs with the same architecture, seed and
training schedule are trained: a standard one and one with :class:`calix.train.FPA` (p = 0.5,
p1_max = 0.25, p2 = 0.1, s_max = 3; the paper's CIFAR-10 defaults). Their clean test accuracy
and their accuracy on test images with a random 10 / 25 / 50% of the pixels zeroed are
recorded.

The first ``n_images`` images of the test split (then of the validation split, which no model
sees either, when more are asked for) are explained for the predicted class's pre-softmax
logit by four estimators: vanilla gradient (VG), Integrated Gradients (IG, zero baseline,
``ig_steps`` Gauss-Legendre steps, times the input), SmoothGrad (SG, ``sg_samples`` noisy
copies, sigma = 0.15 (max - min)) and SmoothGrad^2 (SG2, mean squared gradient, the same
draws). Each map is used signed (channel ``sum``) and unsigned (``abs_sum``); SG2 maps are
non-negative, so their two reductions coincide and SG2 is reported once, as unsigned. A
uniformly random pixel order is the reference.

For every model x estimator x sign, :func:`calix.metrics.mif_lif` zeroes the most (MIF) or
least (LIF) important n = 0, 5, ..., 95% of the pixels and records the logit of the clean
prediction divided by the clean logit; the areas are taken over 0-95% in percent, and the
fidelity is A = AUC(LIF) - AUC(MIF). Per image, areas are averaged over the training seeds;
tables give the mean over images with a 95% normal interval over images (FPA effects are
paired by image).

Claims (each computed on every dataset of the run; a claim holds when it holds on all).
Comparisons are paired by image (one-sided paired t-test, p < 0.05); each claim records the
verdicts of the nearest alternative rules (``sensitivity``):

- MIF delay (finding): per image, the FPA model's MIF AUC is significantly higher in a strict
  majority of the seven estimator x sign settings;
- LIF rise (finding): for a strict majority of the signed estimators (VG, IG, SG) the FPA
  model's mean LIF curve peaks above 1 within the first 25% zeroed (95% bootstrap lower bound
  over images), and the peak averaged over the three is higher than the standard model's
  (bootstrap lower bound above 0);
- signed beats unsigned under FPA (finding): per image, A(signed) > A(unsigned) for each of
  VG, IG and SG;
- FPA raises the fidelity A (calix extension: the paper does not say so, and its two effects
  pull A in opposite directions);
- FPA keeps accuracy (finding, calix's tolerance): at most 2 points below the standard model;
- robustness to 25% zeroed pixels (check: FPA trains on exactly this perturbation).

Sizes
-----
quick: ``digits``, one training seed, 50 images, IG 50 steps, SmoothGrad 20 samples (seconds
on 2 idle CPU cores, training the FPA model included).
full: ``digits`` and ``digits-noisy``, three training seeds each, 500 images, IG 200 steps,
SmoothGrad 50 samples (minutes on 2 idle CPU cores, training the twelve models included).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from calix import zoo
from calix._progress import progress_bar
from calix._stats import standard_error
from calix.explain import IntegratedGradients, Saliency, SmoothGrad, reduce_channels
from calix.metrics import mif_lif
from calix.studies._base import StudyContext
from calix.studies._stats import ALPHA, brief, degenerate_maps, every, paired
from calix.train import FPA

__all__ = ["run", "Config", "ESTIMATORS", "SETTINGS", "MODELS"]

#: estimator key -> short label
ESTIMATORS: dict[str, str] = {"gradient": "VG", "ig": "IG", "smoothgrad": "SG",
                              "smoothgrad2": "SG2"}
#: sign -> channel reduction
SIGNS: dict[str, str] = {"signed": "sum", "unsigned": "abs_sum"}
#: the distinct estimator x sign settings (SG2 maps are non-negative: one setting)
SETTINGS: tuple[tuple[str, str], ...] = (
    ("gradient", "signed"), ("gradient", "unsigned"), ("ig", "signed"), ("ig", "unsigned"),
    ("smoothgrad", "signed"), ("smoothgrad", "unsigned"), ("smoothgrad2", "unsigned"),
)
#: the reference ordering
RANDOM = ("random", "-")
MODELS = ("standard", "FPA")
SIGNED_PAIRS = ("gradient", "ig", "smoothgrad")

NOISE = 0.15  # SmoothGrad sigma / (max - min)
ZERO_FRACTIONS = (0.1, 0.25, 0.5)  # random pixel zeroing for the robustness check
ROBUST_FRACTION = 0.25
ACC_TOLERANCE = 0.02  # accuracy drop allowed for "FPA keeps accuracy"
EARLY = 0.25  # LIF rise looked for within the first 25% zeroed
#: the decision rule of every paired comparison, in words
SIG = f"one-sided paired t-test over images, p < {ALPHA}"


@dataclass(frozen=True, kw_only=True)
class Config:
    """The sizes and settings of one run (``config`` in ``results.json``).

    Parameters
    ----------
    datasets : dataset -> the training seeds of its model pairs.
    model : the zoo model and schedule (in words).
    n_images : images explained (test split first, then validation).
    ig_steps, ig_baseline : Integrated Gradients' steps and reference.
    sg_samples, sg_noise : SmoothGrad's noisy copies and sigma / (max - min).
    fpa : the FPA augmentation's settings (its seed is the training seed).
    output, fill, fractions : the explained output, the fill of zeroed pixels and the shares
        zeroed by MIF / LIF (in words).
    zero_fractions : shares of pixels zeroed at random for the robustness check.
    accuracy_tolerance : accuracy drop allowed for "FPA keeps accuracy".
    lif_early : the LIF rise is looked for within this share zeroed.
    data_seed : the seed of the datasets' splits (the run's seed).
    """

    datasets: dict[str, tuple[int, ...]]
    model: str = "zoo cnn (default schedule)"
    n_images: int
    ig_steps: int
    ig_baseline: str = "zero"
    sg_samples: int
    sg_noise: float = NOISE
    fpa: dict[str, Any] = field(default_factory=dict)
    output: str = "pre-softmax logit of the predicted class"
    fill: str = "zero"
    fractions: str = "0, 5, ..., 95 %"
    zero_fractions: tuple[float, ...] = ZERO_FRACTIONS
    accuracy_tolerance: float = ACC_TOLERANCE
    lif_early: float = EARLY
    data_seed: int = 0

    @staticmethod
    def _common(seed: int) -> dict[str, Any]:
        return {"fpa": FPA(seed=seed).config() | {"seed": "training seed"}, "data_seed": seed}

    @classmethod
    def quick(cls, seed: int = 0) -> Config:
        """``digits``, one training seed, 50 images, IG 50 steps, SmoothGrad 20 samples."""
        return cls(datasets={"digits": (seed,)}, n_images=50, ig_steps=50, sg_samples=20,
                   **cls._common(seed))

    @classmethod
    def full(cls, seed: int = 0) -> Config:
        """``digits`` and ``digits-noisy``, three training seeds each, 500 images, IG 200
        steps, SmoothGrad 50 samples."""
        seeds = tuple(seed + k for k in range(3))
        return cls(datasets={"digits": seeds, "digits-noisy": seeds}, n_images=500,
                   ig_steps=200, sg_samples=50, **cls._common(seed))


# --------------------------------------------------------------------------- computation
def _explainers(model: Any, *, ig_steps: int, sg_samples: int, seed: int) -> dict[str, Any]:
    """Unreduced explainers of the predicted logit (reduced per sign afterwards)."""
    kw: dict[str, Any] = {"output": "logit", "reduce": "none"}
    return {
        "gradient": Saliency(model, **kw),
        "ig": IntegratedGradients(model, baselines="zero", n_steps=ig_steps, **kw),
        "smoothgrad": SmoothGrad(model, n_samples=sg_samples, noise=NOISE, seed=seed, **kw),
        "smoothgrad2": SmoothGrad(model, n_samples=sg_samples, noise=NOISE, squared=True,
                                  seed=seed, **kw),
    }


def _zeroed_accuracy(model: Any, x: np.ndarray, y: np.ndarray, fractions: Sequence[float],
                     seed: int) -> dict[float, float]:
    """Accuracy with a random ``fraction`` of each image's pixels zeroed (all channels).

    The pixel orders come from ``seed`` and are shared by every fraction and every model.
    """
    xt = torch.as_tensor(x)
    n, h, w = len(xt), xt.shape[-2], xt.shape[-1]
    g = torch.Generator().manual_seed(seed)
    ranks = torch.rand(n, h * w, generator=g).argsort(1).argsort(1)
    out = {0.0: float((model.predict(xt) == y).mean())}
    for f in fractions:
        keep = (ranks >= int(round(f * h * w))).reshape(n, 1, h, w).to(xt.dtype)
        out[float(f)] = float((model.predict(xt * keep) == y).mean())
    return out


def _run_model(ctx: StudyContext, data: str, seed: int, fpa: bool, n_images: int,
               ig_steps: int, sg_samples: int) -> dict[str, Any]:
    """Train (or load) one model and compute everything the study needs from it."""
    aug = FPA(seed=seed) if fpa else None
    trained = zoo.train("cnn", data, seed=seed, data_seed=ctx.seed, augment=aug,
                        augment_config=aug.config() if aug else None, progress=ctx.progress)
    ds, model = trained.dataset, trained.wrap()
    pool = np.concatenate([ds.X_test, ds.X_val])
    x = torch.as_tensor(pool[:n_images])
    fid: dict[tuple[str, str], Any] = {}
    maps: dict[tuple[str, str], np.ndarray] = {}
    degen: dict[tuple[str, str], np.ndarray] = {RANDOM: np.zeros(len(x), dtype=bool)}
    for name, exp in _explainers(model, ig_steps=ig_steps, sg_samples=sg_samples,
                                 seed=seed).items():
        raw = torch.as_tensor(exp.explain(x).values)
        for sign, how in SIGNS.items():
            if (name, sign) not in SETTINGS:
                continue
            m = reduce_channels(raw, how, image=True).numpy()
            maps[(name, sign)] = m[:1]
            degen[(name, sign)] = degenerate_maps(m)
            fid[(name, sign)] = mif_lif(model, x, m)
    g = torch.Generator().manual_seed(seed)
    fid[RANDOM] = mif_lif(model, x, torch.rand(len(x), 1, *x.shape[-2:], generator=g).numpy())
    robust = _zeroed_accuracy(model, ds.X_test, ds.y_test, ZERO_FRACTIONS, seed)
    return {"accuracy": float(trained.metrics["accuracy"]), "nll": float(trained.metrics["nll"]),
            "robust": robust, "fid": fid, "maps": maps, "degen": degen, "x0": x[:1].numpy(),
            "n_images": len(x)}


def _ci(v: np.ndarray) -> float:
    """Half-width of the normal 95% interval of the mean of the finite values (NaN for fewer
    than two)."""
    return 1.96 * standard_error(v[np.isfinite(v)])


# --------------------------------------------------------------------------- run
def run(ctx: StudyContext) -> None:
    """MIF / LIF fidelity of VG, IG, SG and SG2 maps, signed and unsigned, for zoo CNNs
    trained with and without FPA; accuracy and robustness of both (see module docstring)."""
    cfg = ctx.use_config(Config)
    jobs = [(d, seed, fpa) for d, seeds in cfg.datasets.items() for seed in seeds
            for fpa in (False, True)]
    res: dict[tuple[str, int, str], dict[str, Any]] = {}
    for data, seed, fpa in progress_bar(jobs, total=len(jobs), enabled=ctx.progress,
                                        description="fpa models"):
        res[(data, seed, MODELS[int(fpa)])] = _run_model(ctx, data, seed, fpa, cfg.n_images,
                                                         cfg.ig_steps, cfg.sg_samples)
    agg, fid_rows, robust_rows, fractions = _aggregate(ctx, cfg, res)

    early = (fractions > 0) & (fractions <= EARLY + 1e-9)
    _mif_delay(ctx, agg)
    _lif_rise(ctx, agg, early)
    _signed_vs_unsigned(ctx, agg)
    _fidelity(ctx, agg)
    _accuracy(ctx, agg)
    _robustness(ctx, agg)

    for data in cfg.datasets:
        ctx.figure(f"curves_{data}", _plot_curves(agg[data]["curves"], fractions, data),
                   caption=f"{data}: mean MIF (blue) and LIF (red) curves of the predicted "
                   "logit / clean logit, standard model dashed, FPA model solid, per "
                   "estimator and sign (random pixel order top right)")
        ctx.figure(f"fidelity_{data}", _plot_fidelity(fid_rows, data),
                   caption=f"{data}: fidelity A = AUC(LIF) - AUC(MIF) with 95% intervals "
                   "over images, standard vs FPA model")
        first = res[(data, ctx.seed, "standard")], res[(data, ctx.seed, "FPA")]
        ctx.figure(f"maps_{data}", _plot_maps(first, data),
                   caption=f"{data}: the first evaluated image and its importance maps for "
                   "the standard and the FPA model (signed maps: red positive, blue "
                   "negative; unsigned maps: dark = important)")
    ctx.figure("robustness", _plot_robustness(robust_rows, list(cfg.datasets)),
               caption="test accuracy with a random fraction of pixels zeroed, standard vs "
               "FPA model")


def _aggregate(ctx: StudyContext, cfg: Config, res: dict[tuple[str, int, str], dict[str, Any]]
               ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]],
                          list[dict[str, Any]], np.ndarray]:
    """Per dataset: accuracy, robustness and fidelity over the training seeds, per image (the
    tables and the ``curves`` arrays); returns the aggregates, the fidelity and robustness
    rows and the zeroed fractions."""
    acc_rows, robust_rows, fid_rows, seed_rows, effect_rows = [], [], [], [], []
    agg: dict[str, dict[str, Any]] = {}
    arrays: dict[str, np.ndarray] = {}
    fractions = next(iter(res.values()))["fid"][RANDOM].mif.fractions
    arrays["fractions"] = fractions
    for data, seeds in cfg.datasets.items():
        n_seeds = len(seeds)
        a: dict[str, Any] = {"acc": {}, "robust": {}, "curves": {}, "area": {}, "auc": {},
                             "lif_images": {}}
        for model in MODELS:
            runs = [res[(data, s, model)] for s in seeds]
            accs = np.array([r["accuracy"] for r in runs])
            a["acc"][model] = float(accs.mean())
            acc_rows.append({"dataset": data, "model": model, "n_seeds": n_seeds,
                             "accuracy": float(accs.mean()),
                             "accuracy_sd": float(accs.std(ddof=1)) if n_seeds > 1 else None,
                             "nll": float(np.mean([r["nll"] for r in runs]))})
            for f in (0.0, *ZERO_FRACTIONS):
                v = float(np.mean([r["robust"][f] for r in runs]))
                a["robust"][(model, f)] = v
                robust_rows.append({"dataset": data, "model": model, "fraction_zeroed": f,
                                    "accuracy": v})
            for est, sign in (*SETTINGS, RANDOM):
                fs = [r["fid"][(est, sign)] for r in runs]
                for s, f in zip(seeds, fs, strict=True):
                    seed_rows.append({"dataset": data, "model": model, "seed": s,
                                      "estimator": est, "sign": sign,
                                      "mif_auc": float(f.mif.auc.mean()),
                                      "lif_auc": float(f.lif.auc.mean()),
                                      "fidelity": f.mean, "fidelity_ci95": f.ci95})
                # an image whose map is degenerate (constant / NaN) for any seed is left out
                bad = np.any([r["degen"][(est, sign)] for r in runs], axis=0)
                nan_rows = np.where(bad, np.nan, 0.0)
                mif = np.mean([f.mif.scores for f in fs], axis=0)  # (n, F), seed-averaged
                lif = np.mean([f.lif.scores for f in fs], axis=0)
                mif_auc = np.mean([f.mif.auc for f in fs], axis=0) + nan_rows
                lif_auc = np.mean([f.lif.auc for f in fs], axis=0) + nan_rows
                area = lif_auc - mif_auc
                key = (model, est, sign)
                a["curves"][key] = (mif[~bad].mean(0), lif[~bad].mean(0))
                mif, lif = mif + nan_rows[:, None], lif + nan_rows[:, None]
                a["area"][key] = area
                a["auc"][key] = (mif_auc, lif_auc)
                a["lif_images"][key] = lif
                means = [f.mean for f in fs]
                fid_rows.append({
                    "dataset": data, "model": model, "estimator": est, "sign": sign,
                    "n_images": int((~bad).sum()), "degenerate_maps": int(bad.sum()),
                    "n_seeds": n_seeds,
                    "mif_auc": float(np.nanmean(mif_auc)), "lif_auc": float(np.nanmean(lif_auc)),
                    "fidelity": float(np.nanmean(area)), "fidelity_ci95": _ci(area),
                    "fidelity_seed_sd": float(np.std(means, ddof=1)) if n_seeds > 1 else None,
                })
                tag = f"{data}__{model}__{est}__{sign}"
                arrays[f"{tag}__mif"], arrays[f"{tag}__lif"] = mif, lif
                arrays[f"{tag}__area"] = area
        for est, sign in (*SETTINGS, RANDOM):
            d_mif = a["auc"][("FPA", est, sign)][0] - a["auc"][("standard", est, sign)][0]
            d_lif = a["auc"][("FPA", est, sign)][1] - a["auc"][("standard", est, sign)][1]
            d_area = a["area"][("FPA", est, sign)] - a["area"][("standard", est, sign)]
            effect_rows.append({
                "dataset": data, "estimator": est, "sign": sign,
                "d_mif_auc": float(np.nanmean(d_mif)), "d_mif_auc_ci95": _ci(d_mif),
                "d_lif_auc": float(np.nanmean(d_lif)), "d_lif_auc_ci95": _ci(d_lif),
                "d_fidelity": float(np.nanmean(d_area)), "d_fidelity_ci95": _ci(d_area),
            })
        agg[data] = a

    ctx.table("accuracy", acc_rows)
    ctx.table("robustness", robust_rows)
    ctx.table("fidelity", fid_rows)
    ctx.table("fpa_effect", effect_rows)
    ctx.table("fidelity_by_seed", seed_rows)
    ctx.arrays("curves", **arrays)
    return agg, fid_rows, robust_rows, fractions


# --------------------------------------------------------------------------- claims
def _lif_peaks(a: dict[str, Any], early: np.ndarray, seed: int, n_boot: int = 1000
               ) -> dict[str, Any]:
    """The early peak of the mean LIF curve of every signed estimator, for both models, with
    a bootstrap over images (images resampled jointly for both models)."""
    lif = {(m, e): a["lif_images"][(m, e, "signed")][:, early] for m in MODELS
           for e in SIGNED_PAIRS}
    ok = np.all([np.isfinite(v).all(1) for v in lif.values()], axis=0)  # no degenerate map
    lif = {k: v[ok] for k, v in lif.items()}
    n = int(ok.sum())
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(n_boot, n))
    boot = {k: v[picks].mean(1).max(-1) for k, v in lif.items()}  # (n_boot,)
    gain_boot = np.mean([boot[("FPA", e)] - boot[("standard", e)] for e in SIGNED_PAIRS], 0)
    return {
        "peak": {k: float(v.mean(0).max()) for k, v in lif.items()},
        "peak_fpa_lower95": {e: float(np.quantile(boot[("FPA", e)], 0.025))
                             for e in SIGNED_PAIRS},
        "gain_lower95": float(np.quantile(gain_boot, 0.025)),
    }


def _fpa_vs_standard(pair: Callable[[str, str], tuple[Any, Any]],
                     names: str | tuple[str, str]
                     ) -> tuple[dict[tuple[str, str], dict[str, Any]], dict[str, Any], bool,
                                dict[str, bool]]:
    """Paired tests, FPA model against the standard one, in every setting: the tests, the
    evidence (named ``mean_d_<mean name>`` and ``d_<per-setting name>[e,s]``), the verdict (a
    strict majority of settings significantly higher) and the untested alternative rule."""
    mean_name, each = (names, names) if isinstance(names, str) else names
    tests = {(e, s): paired(*pair(e, s)) for e, s in SETTINGS}
    n_sig = sum(t["significant"] for t in tests.values())
    mean = float(np.mean([t["mean_diff"] for t in tests.values()]))
    evidence = {"settings_significantly_higher_with_fpa": n_sig, "n_settings": len(SETTINGS),
                f"mean_d_{mean_name}": mean,
                **{f"d_{each}[{e},{s}]": brief(t) for (e, s), t in tests.items()}}
    untested = {"higher in a strict majority of settings and on average (no test)":
                sum(t["mean_diff"] > 0 for t in tests.values()) > len(SETTINGS) / 2
                and mean > 0}
    return tests, evidence, n_sig > len(SETTINGS) / 2, untested


@dataclass
class _Verdict:
    """A claim over the datasets of the run: it holds when it holds on every dataset, and so
    does each alternative rule (``sensitivity``); the evidence is kept per dataset."""

    holds: list[bool] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    rules: dict[str, list[bool]] = field(default_factory=dict)

    def add(self, data: str, holds: Any, evidence: dict[str, Any],
            rules: dict[str, Any]) -> None:
        self.holds.append(bool(holds))
        self.evidence[data] = evidence
        for rule, value in rules.items():
            self.rules.setdefault(rule, []).append(bool(value))

    @property
    def all(self) -> bool:
        return all(self.holds)

    @property
    def sensitivity(self) -> dict[str, bool]:
        return {rule: all(v) for rule, v in self.rules.items()}


def _mif_delay(ctx: StudyContext, agg: dict[str, dict[str, Any]]) -> None:
    """MIF curves: FPA delays the drop of the logit."""
    v = _Verdict()
    for data, a in agg.items():
        # per image, MIF AUC of the FPA model minus the standard model's
        t_mif, ev, holds, untested = _fpa_vs_standard(
            lambda e, s, a=a: (a["auc"][("FPA", e, s)][0], a["auc"][("standard", e, s)][0]),
            "mif_auc")
        v.add(data, holds, ev, {
            **untested,
            "significantly higher in every setting":
                sum(t["significant"] for t in t_mif.values()) == len(SETTINGS),
            "Wilcoxon signed-rank instead of t":
                sum(t["significant_wilcoxon"] for t in t_mif.values()) > len(SETTINGS) / 2})
    ctx.claim("FPA delays the MIF logit drop: per image, the MIF AUC of the FPA model is "
              f"higher than the standard model's ({SIG}) in a strict majority of the seven "
              "estimator x sign settings", v.all, v.evidence, sensitivity=v.sensitivity,
              quote="FPA training results in delayed decrease in logits for MIF curves",
              paper="CIFAR-10, Food101, ImageNet; ResNet-18/50 (MIF curves)")


def _lif_rise(ctx: StudyContext, agg: dict[str, dict[str, Any]], early: np.ndarray) -> None:
    """LIF curves: with FPA, zeroing the least important pixels of signed maps first raises
    the logit."""
    v = _Verdict()
    for data, a in agg.items():
        pk = _lif_peaks(a, early, ctx.seed)
        rises = sum(x > 1.0 for x in pk["peak_fpa_lower95"].values())
        gain = float(np.mean([pk["peak"][("FPA", e)] - pk["peak"][("standard", e)]
                              for e in SIGNED_PAIRS]))
        ev = {"signed_lif_peak_fpa": {e: pk["peak"][("FPA", e)] for e in SIGNED_PAIRS},
              "signed_lif_peak_fpa_lower95": pk["peak_fpa_lower95"],
              "signed_lif_peak_standard": {e: pk["peak"][("standard", e)]
                                           for e in SIGNED_PAIRS},
              "n_signed_rising_above_1_fpa": int(rises),
              "mean_peak_gain_fpa_minus_standard": gain,
              "mean_peak_gain_lower95": pk["gain_lower95"]}
        v.add(data, rises > len(SIGNED_PAIRS) / 2 and pk["gain_lower95"] > 0, ev, {
            "peaks and gain of the mean curves only (no bootstrap)":
                sum(pk["peak"][("FPA", e)] > 1 for e in SIGNED_PAIRS) > len(SIGNED_PAIRS) / 2
                and gain > 0,
            "every signed estimator rises (bootstrap)": rises == len(SIGNED_PAIRS)
                and pk["gain_lower95"] > 0,
            "the rise alone, without the comparison with the standard model":
                rises > len(SIGNED_PAIRS) / 2})
    ctx.claim("With FPA, zeroing the least important pixels of signed maps first raises the "
              "logit: for a strict majority of VG, IG and SG (signed), the peak of the FPA "
              f"model's mean LIF curve within the first {100 * EARLY:.0f}% zeroed is above 1 "
              "(its 95% bootstrap lower bound over images), and that peak, averaged over the "
              "three estimators, is higher than the standard model's (lower bound above 0)",
              v.all, v.evidence, sensitivity=v.sensitivity,
              quote="FPA training results in ... initial increase for LIF curves",
              paper="masking pixels with negative importance scores coincides with an "
              "increase of the logit")


def _signed_vs_unsigned(ctx: StudyContext, agg: dict[str, dict[str, Any]]) -> None:
    """Signed against unsigned estimators under FPA, per image."""
    v = _Verdict()
    for data, a in agg.items():
        t_sign = {e: paired(a["area"][("FPA", e, "signed")], a["area"][("FPA", e, "unsigned")])
                  for e in SIGNED_PAIRS}
        fa = {(m, e, s): float(a["area"][(m, e, s)].mean()) for m, e, s in a["area"]}
        ev = {"A_fpa_signed_minus_unsigned": {e: brief(t) for e, t in t_sign.items()},
              "signed_minus_unsigned_standard": {
                  e: fa[("standard", e, "signed")] - fa[("standard", e, "unsigned")]
                  for e in SIGNED_PAIRS}}
        v.add(data, every(t_sign), ev, {
            "higher mean A only (no test)": all(t["mean_diff"] > 0 for t in t_sign.values()),
            "significant for a strict majority of VG, IG, SG":
                sum(t["significant"] for t in t_sign.values()) > len(SIGNED_PAIRS) / 2,
            "Wilcoxon signed-rank instead of t": every(t_sign, "significant_wilcoxon")})
    ctx.claim("Under FPA, signed estimators have a higher fidelity A than their unsigned "
              f"versions: per image, A(signed) > A(unsigned) for each of VG, IG and SG ({SIG})",
              v.all, v.evidence, sensitivity=v.sensitivity,
              quote="Signed importance estimators consistently outperform unsigned ones when "
              "FPA is used",
              paper="e.g. CIFAR-10, FPA, IG signed: LIF 87.9, MIF 28.5, A = 59.4 +- 13.4")


def _fidelity(ctx: StudyContext, agg: dict[str, dict[str, Any]]) -> None:
    """The fidelity A of the FPA model against the standard one (calix's extension)."""
    v = _Verdict()
    for data, a in agg.items():
        _, ev, holds, untested = _fpa_vs_standard(
            lambda e, s, a=a: (a["area"][("FPA", e, s)], a["area"][("standard", e, s)]),
            ("fidelity", "A"))
        v.add(data, holds, ev, untested)
    ctx.claim("FPA raises the fidelity A = AUC(LIF) - AUC(MIF): per image, A of the FPA model "
              f"is higher than the standard model's ({SIG}) in a strict majority of the seven "
              "settings", v.all, v.evidence, sensitivity=v.sensitivity, kind="extension",
              paper="not stated by the paper, which uses A to compare estimators. The paper's "
              "two effects pull A in opposite directions: a delayed MIF drop raises AUC(MIF) "
              "and so lowers A, an early LIF rise raises AUC(LIF) and A")


def _accuracy(ctx: StudyContext, agg: dict[str, dict[str, Any]]) -> None:
    """The accuracy cost of FPA."""
    v = _Verdict()
    for data, a in agg.items():
        drop = a["acc"]["standard"] - a["acc"]["FPA"]
        ev = {"accuracy_standard": a["acc"]["standard"], "accuracy_fpa": a["acc"]["FPA"],
              "drop": drop, "tolerance": ACC_TOLERANCE}
        v.add(data, drop <= ACC_TOLERANCE, ev,
              {"at most 1 point": drop <= 0.01, "at most 5 points": drop <= 0.05})
    ctx.claim(f"FPA keeps accuracy: the FPA model's test accuracy is at most "
              f"{100 * ACC_TOLERANCE:.0f} points below the standard model's (calix's "
              "tolerance: the paper gives no number)", v.all, v.evidence,
              sensitivity=v.sensitivity,
              quote="FPA introduces a slight accuracy drop that is not quantified",
              paper="a trade-off between accuracy and reliable evaluation")


def _robustness(ctx: StudyContext, agg: dict[str, dict[str, Any]]) -> None:
    """A check that the augmentation took effect: robustness to zeroed pixels."""
    v = _Verdict()
    for data, a in agg.items():
        ev = {f"accuracy_{m}_zeroed_{int(100 * f)}pct": a["robust"][(m, f)]
              for m in MODELS for f in ZERO_FRACTIONS}
        v.add(data, a["robust"][("FPA", ROBUST_FRACTION)]
              > a["robust"][("standard", ROBUST_FRACTION)], ev,
              {"with 50% zeroed": a["robust"][("FPA", 0.5)] > a["robust"][("standard", 0.5)]})
    ctx.claim(f"FPA models are robust to the perturbation they train on: with "
              f"{100 * ROBUST_FRACTION:.0f}% of the pixels zeroed at random the FPA model is "
              "more accurate than the standard one", v.all, v.evidence,
              sensitivity=v.sensitivity, kind="check",
              paper="a check that the augmentation took effect: FPA trains on zeroed pixels, "
              "so this tests the training, not the paper's finding about explanations")


# --------------------------------------------------------------------------- figures
def _label(est: str, sign: str) -> str:
    return "random order" if est == "random" else f"{ESTIMATORS[est]} {sign}"


def _plot_curves(curves: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]],
                 fractions: np.ndarray, data: str) -> Any:
    from calix.plot import subplots

    panels = [[("gradient", "signed"), ("ig", "signed"), ("smoothgrad", "signed"), RANDOM],
              [("gradient", "unsigned"), ("ig", "unsigned"), ("smoothgrad", "unsigned"),
               ("smoothgrad2", "unsigned")]]
    fig, axes = subplots(2, 4, figsize=(14, 6.2), sharex=True, sharey=True)
    pct = 100 * fractions
    for i, row in enumerate(panels):
        for j, (est, sign) in enumerate(row):
            ax = axes[i][j]
            for model, ls in (("standard", "--"), ("FPA", "-")):
                mif, lif = curves[(model, est, sign)]
                ax.plot(pct, mif, ls=ls, color="C0", label=f"MIF {model}")
                ax.plot(pct, lif, ls=ls, color="C3", label=f"LIF {model}")
            ax.axhline(1.0, color="0.6", lw=0.8)
            ax.axhline(0.0, color="0.8", lw=0.8)
            ax.set_title(_label(est, sign))
            ax.grid(alpha=0.3)
            if i == 1:
                ax.set_xlabel("% of pixels zeroed")
            if j == 0:
                ax.set_ylabel("logit / clean logit")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"MIF / LIF curves ({data})")
    fig.tight_layout()
    return fig


def _plot_fidelity(rows: list[dict[str, Any]], data: str) -> Any:
    from calix.plot import subplots

    settings = [*SETTINGS, RANDOM]
    fig, ax = subplots(figsize=(10, 3.8))
    xs = np.arange(len(settings))
    for k, model in enumerate(MODELS):
        sel = [next(r for r in rows if r["dataset"] == data and r["model"] == model
                    and r["estimator"] == e and r["sign"] == s) for e, s in settings]
        ax.bar(xs + (k - 0.5) * 0.38, [r["fidelity"] for r in sel], 0.38,
               yerr=[r["fidelity_ci95"] or 0.0 for r in sel], capsize=3, label=model,
               color="0.6" if model == "standard" else "C2")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xticks(xs, [_label(e, s) for e, s in settings], rotation=20)
    ax.set_ylabel("A = AUC(LIF) - AUC(MIF)")
    ax.set_title(f"fidelity with 95% intervals over images ({data})")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def _plot_maps(runs: tuple[dict[str, Any], dict[str, Any]], data: str) -> Any:
    from calix.plot import subplots

    cols = [("gradient", "signed"), ("ig", "signed"), ("smoothgrad", "signed"),
            ("gradient", "unsigned"), ("ig", "unsigned"), ("smoothgrad", "unsigned"),
            ("smoothgrad2", "unsigned")]
    fig, axes = subplots(2, len(cols) + 1, figsize=(2 * (len(cols) + 1), 4.4))
    for i, (model, r) in enumerate(zip(MODELS, runs, strict=True)):
        axes[i][0].imshow(r["x0"][0, 0], cmap="gray_r")
        axes[i][0].set_title("input" if i == 0 else "")
        axes[i][0].set_ylabel(model)
        for j, (est, sign) in enumerate(cols, start=1):
            m = r["maps"][(est, sign)][0, 0]
            if sign == "signed":
                lim = float(np.abs(m).max()) or 1.0
                axes[i][j].imshow(m, cmap="bwr", vmin=-lim, vmax=lim)
            else:
                axes[i][j].imshow(m, cmap="Greys")
            axes[i][j].set_title(_label(est, sign) if i == 0 else "", fontsize=9)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"importance maps, standard (top) vs FPA (bottom) model ({data})")
    fig.tight_layout()
    return fig


def _plot_robustness(rows: list[dict[str, Any]], datasets: list[str]) -> Any:
    from calix.plot import subplots

    fig, axes = subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.4),
                             squeeze=False)
    for ax, data in zip(axes[0], datasets, strict=True):
        for model, ls in (("standard", "--"), ("FPA", "-")):
            sel = [r for r in rows if r["dataset"] == data and r["model"] == model]
            ax.plot([100 * r["fraction_zeroed"] for r in sel], [r["accuracy"] for r in sel],
                    ls=ls, marker="o", label=model)
        ax.set_xlabel("% of pixels zeroed at random")
        ax.set_ylabel("test accuracy")
        ax.set_title(data)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig
