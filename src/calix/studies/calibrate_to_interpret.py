"""Calibrate to Interpret (Scafarto, Posocco & Bonnefoy 2022): does post-hoc calibration make
saliency maps more faithful, more readable and more stable?

Setting. The zoo CNN on ``digits-noisy`` (16x16 noisy, shifted digits with 10% label noise:
about 72% test accuracy and clearly overconfident) stands in for the paper's VGG / ResNet /
EfficientNet models on CIFAR-100, Food-101 and CUB-200. Three versions of the same model are
explained: uncalibrated, temperature-scaled, and Dirichlet-calibrated (ODIR), both calibrators
fitted on the validation split; every explainer differentiates or queries the *calibrated*
softmax (:func:`calix.calibrate.calibrated`).

Protocol (from the paper and its released code), on ``n_images`` test images drawn with the seed:

- explainers: Sensitivity (|gradient| of the target probability summed over channels),
  Integrated Gradients (black and white references averaged, 30 right-Riemann steps), RISE
  (8x8 Bernoulli(0.6) grids, bilinear upsampling with random shifts, black fill), Meaningful
  Perturbation (Adam, lr 0.1, λ_l1 0.1, β_TV 0.4, blur fill); each model explains its own
  predicted class;
- SSIM between every calibrated map and the uncalibrated map of the same image;
- deletion AUC: 100 steps, removed pixels replaced by a Gaussian blur of the image (11x11,
  σ = ``blur_sigma``, reflection padding), the predicted-class probability normalised to 1 on
  the clean image; better-than-random (BTR) against SLIC-superpixel deletion in 5 random
  orders (:func:`calix.metrics.faithfulness.better_than_random`);
- Otsu-TV of the min-max maps (:func:`calix.metrics.similarity.otsu_tv`);
- local Lipschitz constant of the min-max maps over ``lipschitz_neighbours`` points in the L2
  ball of radius 0.05 around the first ``lipschitz_images`` images;
- the temperature sweep: MP deletion AUC (and the test ECE) for a grid of fixed temperatures
  that includes the fitted one;
- ECE (binned, 15 bins, and the paper's KDE estimator), NLL and accuracy of every calibrator
  on the test split.

Decisions. Every comparison is paired by image and decided by a one-sided paired t-test at
p < 0.05 (:func:`calix.studies._stats.paired`; the Wilcoxon signed-rank test is reported
beside it), except the raise of the better-than-random ratio, a pass/fail outcome per image,
which an exact one-sided McNemar test decides (:func:`~calix.studies._stats.paired_binary`);
every claim records the verdicts of the nearest alternative rules
(``sensitivity``). A map that is constant or holds NaN (:func:`~calix.studies._stats.
degenerate_maps`: a Meaningful Perturbation optimisation that deleted nothing, a dead
gradient) ranks no pixel above another; the image is left out of that explainer's aggregates
and comparisons under every calibrator (the ``degenerate_maps`` table lists each one, the
``explanations`` table gives ``n_images_used`` and the mean over all images beside the kept
one), and the temperature sweep leaves out images whose MP map is degenerate at any
temperature. For MP the ``explanations`` table also counts the optimisations whose mask kept
more than 90% of the clean class score (``mp_score_kept_over_90pct``: the mask moved but
deleted little); they are reported, not excluded, since their maps still rank pixels.

Sizes. Quick: 12 images, RISE 1000 masks, MP 150 steps, Lipschitz on 4 images x 10
neighbours, sweep temperatures 0.5, 1, 2, 4, 8 and the fitted one, Dirichlet with fixed ODIR
strengths (λ = 1, μ = 0.1). Full: 200 images, RISE 4000 masks, MP 600 steps, Lipschitz on 12
images x 20 neighbours (the paper: 150 x 40; cut because every neighbour costs 4000 RISE
queries and a 600-step MP run), 9 log-spaced sweep temperatures from 0.25 to 16 plus 1 and the
fitted one, Dirichlet strengths by 3-fold cross-validation on {0.01, 0.1, 1}², and three
models (seeds s, s + 1000, s + 2000, each with its own training seed and data split; one in
quick mode). The model passes run on one torch thread (restored afterwards).

Several models. The seed draws the data split (with 10% label noise, which validation rows
the temperature is fitted on matters) and the model's training, and these decide a verdict as
much as the images do: with one model per run, four verdicts differed between seeds 0 and 1
in full mode. Of three models trained on seed 0's split, temperature scaling raised the
KDE-ECE of two and lowered the third's by 1.24x; on seed 1's split it divided all three's by
2.1 to 2.7. A full run therefore
trains ``n_models`` models, each on its own split; the drawn image positions are shared out
among them (each explained by its own model on its own test split, Lipschitz images
likewise), every paired comparison pools the images of all models, the calibration claims use
the models' mean ECEs (each model's rows are in the ``calibration`` table beside the mean),
and the temperature sweep evaluates every model at every model's fitted temperature, with the
geometric mean of the fitted temperatures as "the fitted temperature". The figures show the
first model.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from calix import zoo
from calix._progress import progress_bar
from calix._stats import standard_error
from calix.calibrate import Calibrator, Dirichlet, TemperatureScaling, calibrated
from calix.explain import (
    RISE,
    Explanation,
    IntegratedGradients,
    MeaningfulPerturbation,
    Saliency,
)
from calix.metrics.calibration import accuracy, ece, kde_ece, nll
from calix.metrics.faithfulness import Curve, better_than_random, deletion_curve
from calix.metrics.robustness import local_lipschitz
from calix.metrics.similarity import minmax, otsu_tv, ssim
from calix.models import Model
from calix.perturb import Blur
from calix.studies._base import StudyContext, torch_threads
from calix.studies._stats import (
    ALPHA,
    bootstrap_mean_ci,
    brief,
    degenerate_maps,
    every,
    nearest_rules,
    paired,
    paired_binary,
)

__all__ = ["run", "Config"]

CALIBRATORS = ("none", "temperature", "dirichlet")
CALIBRATED = ("temperature", "dirichlet")
EXPLAINERS = ("Sensitivity", "IG", "RISE", "MP")
AGNOSTIC = ("RISE", "MP")
GRADIENT = ("Sensitivity", "IG")
#: the decision rule of every comparison claim, in words
SIG = f"one-sided paired t-test over images, p < {ALPHA}"


@dataclass(frozen=True, kw_only=True)
class Config:
    """The sizes and settings of one run (``config`` in ``results.json``).

    Parameters
    ----------
    dataset, model : the zoo dataset and architecture.
    seed : seeds the model, the image draw, RISE, the random orders and the neighbours.
    n_images : test images explained.
    ig_steps, ig_baselines, ig_integration : Integrated Gradients' steps, references (their
        maps averaged) and integration rule.
    rise_masks, rise_grid, rise_p : RISE's masks, grid cells per side and keep probability.
    mp_steps, mp_lr, mp_l1, mp_tv : Meaningful Perturbation's Adam steps, learning rate, L1
        weight and total-variation weight.
    blur_kernel, blur_sigma : the Gaussian blur that replaces removed pixels.
    deletion_steps : steps of every deletion curve.
    btr_orders, btr_segments : random superpixel orders and SLIC segments of the
        better-than-random baseline.
    lipschitz_images, lipschitz_neighbours, lipschitz_radius : the local Lipschitz estimate
        (first images, neighbours per image, L2 radius).
    sweep_temperatures : the fixed temperatures of the sweep (the fitted one is added).
    dirichlet_reg : how Dirichlet's ODIR strengths are chosen (in words).
    ece_bins : bins of the binned ECE.
    n_models : models trained, model m with training seed and data split ``seed + 1000 m``;
        the images are shared out among them.
    torch_threads : torch threads while the study runs.
    """

    dataset: str = "digits-noisy"
    model: str = "cnn"
    seed: int = 0
    n_images: int
    ig_steps: int = 30
    ig_baselines: str = "black+white"
    ig_integration: str = "riemann_right"
    rise_masks: int
    rise_grid: int = 8
    rise_p: float = 0.6
    mp_steps: int
    mp_lr: float = 0.1
    mp_l1: float = 0.1
    mp_tv: float = 0.4
    blur_kernel: int = 11
    blur_sigma: float = 10.0
    deletion_steps: int = 100
    btr_orders: int = 5
    btr_segments: int = 100
    lipschitz_images: int
    lipschitz_neighbours: int
    lipschitz_radius: float = 0.05
    sweep_temperatures: tuple[float, ...]
    dirichlet_reg: str
    ece_bins: int = 15
    n_models: int = 1
    torch_threads: int = 1

    @classmethod
    def quick(cls, seed: int = 0) -> Config:
        """12 images, RISE 1000 masks, MP 150 steps, Lipschitz on 4 images x 10 neighbours,
        five sweep temperatures, fixed Dirichlet strengths."""
        return cls(seed=seed, n_images=12, rise_masks=1000, mp_steps=150, lipschitz_images=4,
                   lipschitz_neighbours=10, sweep_temperatures=(0.5, 1.0, 2.0, 4.0, 8.0),
                   dirichlet_reg="fixed lambda=1, mu=0.1")

    @classmethod
    def full(cls, seed: int = 0) -> Config:
        """200 images shared out among 3 models, RISE 4000 masks, MP 600 steps, Lipschitz on
        12 images x 20 neighbours, 9 log-spaced sweep temperatures and 1, Dirichlet strengths
        by CV."""
        temps = sorted({1.0, *np.round(np.geomspace(0.25, 16.0, 9), 3).tolist()})
        return cls(seed=seed, n_images=200, rise_masks=4000, mp_steps=600, lipschitz_images=12,
                   lipschitz_neighbours=20, sweep_temperatures=tuple(temps),
                   dirichlet_reg="3-fold CV on {0.01, 0.1, 1}^2", n_models=3)


class _MinMaxExplainer:
    """An explainer whose maps are min-max normalised per input (the paper normalises every
    map, so the Lipschitz constants of calibrated and uncalibrated maps are comparable)."""

    def __init__(self, explainer: Any) -> None:
        self.explainer = explainer

    def explain(self, x: Any, target: Any = None) -> Explanation:
        exp = self.explainer.explain(x, target=target)
        exp.values = minmax(exp.values)[:, None]
        return exp


def _explainers(model: Model, cfg: Config, fill: Blur) -> dict[str, Any]:
    return {
        "Sensitivity": Saliency(model, reduce="abs_sum"),
        "IG": IntegratedGradients(model, baselines=["black", "white"], n_steps=cfg.ig_steps,
                                  method="riemann_right", reduce="sum"),
        "RISE": RISE(model, n_masks=cfg.rise_masks, grid=cfg.rise_grid, p=cfg.rise_p,
                     seed=cfg.seed),
        "MP": MeaningfulPerturbation(model, fill=fill, steps=cfg.mp_steps, lr=cfg.mp_lr,
                                     l1=cfg.mp_l1, tv=cfg.mp_tv),
    }


def _briefs(tests: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The summaries of paired tests, by key, with the Wilcoxon p-value."""
    return {k: brief(t, wilcoxon=True) for k, t in tests.items()}


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    r = spearmanr(a, b).statistic
    return float(r) if np.isfinite(r) else 0.0


@dataclass
class _Calibration:
    """The three versions of the model and how calibrated each is on the test split."""

    models: dict[str, Model]
    rows: dict[str, dict[str, Any]]  # calibrator -> its row of the calibration table
    probs_test: dict[str, np.ndarray]
    z_test: torch.Tensor
    t_cal: float


@dataclass
class _Maps:
    """Every calibrator x explainer's maps and per-image scores, with the images each
    explainer's comparisons keep (no degenerate map under any calibrator)."""

    x: torch.Tensor
    idx: np.ndarray
    jobs: list[tuple[str, str]]
    maps: dict[tuple[str, str], np.ndarray]
    curves: dict[tuple[str, str], Any]
    targets: dict[str, np.ndarray]
    random_auc: dict[str, np.ndarray]
    lips: dict[tuple[str, str], np.ndarray]
    per: dict[str, dict[tuple[str, str], np.ndarray]]  # metric -> (calibrator, explainer) ->
    keep: dict[str, np.ndarray]
    row: dict[tuple[str, str], dict[str, Any]]  # the explanations table by key
    n_lip: int
    seed: int

    @property
    def n(self) -> int:
        return len(self.x)

    @property
    def every(self) -> np.ndarray:
        """Every image (degenerate maps included)."""
        return np.ones(self.n, dtype=bool)

    @property
    def keep_all(self) -> np.ndarray:
        """The images no explainer has a degenerate map of."""
        return np.all([self.keep[e] for e in EXPLAINERS], axis=0)

    @property
    def excluded(self) -> dict[str, int]:
        return {e: int((~self.keep[e]).sum()) for e in EXPLAINERS}

    def test(self, metric: str, c: str, e: str, alternative: str,
             mask: np.ndarray | None = None, ref: str = "none") -> dict[str, Any]:
        """Calibrator ``c`` against ``ref`` on ``metric`` of explainer ``e``, paired by image."""
        k = self.keep[e] if mask is None else mask
        return paired(self.per[metric][(c, e)][k], self.per[metric][(ref, e)][k],
                      alternative=alternative)

    def vs_uncalibrated(self, metric: str, explainers: tuple[str, ...], alternative: str,
                        mask: np.ndarray | None = None) -> dict[str, dict[str, Any]]:
        """Every calibrator against none on ``metric``, for each of ``explainers``:
        ``{"calibrator/explainer": paired test}``."""
        return {f"{c}/{e}": self.test(metric, c, e, alternative, mask)
                for c in CALIBRATED for e in explainers}

    def mean_of(self, metric: str, c: str, e: str, mask: np.ndarray | None = None) -> float:
        return float(self.per[metric][(c, e)][self.keep[e] if mask is None else mask].mean())

    def drop(self, c: str, e: str, mask: np.ndarray) -> np.ndarray:
        """Per image, the deletion AUC calibration ``c`` removes from explainer ``e``'s."""
        return self.per["auc"][("none", e)][mask] - self.per["auc"][(c, e)][mask]


@dataclass
class _Sweep:
    """MP's deletion AUC and the test calibration at fixed temperatures."""

    temps: list[float]
    rows: list[dict[str, Any]]
    auc: dict[float, np.ndarray]
    keep: np.ndarray  # images with no degenerate MP map at any temperature


def run(ctx: StudyContext) -> None:
    """Run the study (see the module docstring) and record its tables, claims and figures."""
    cfg = ctx.use_config(Config)
    with torch_threads(cfg.torch_threads):
        _run(ctx, cfg)


def _run(ctx: StudyContext, cfg: Config) -> None:
    seeds = [ctx.seed + 1000 * m for m in range(cfg.n_models)]
    fill = Blur(cfg.blur_kernel, cfg.blur_sigma)
    bases, cals, sets = [], [], []
    for seed in seeds:  # each model its own training seed and data split
        trained = zoo.train("cnn", "digits-noisy", seed=seed, data_seed=seed)
        sets.append(trained.dataset)
        bases.append(trained.wrap())
        cals.append(_calibrate(ctx, cfg, bases[-1], sets[-1]))
    cal = _pooled_calibration(ctx, cals, seeds)
    rng = np.random.default_rng(ctx.seed)
    n_test = min(len(ds.X_test) for ds in sets)
    idx = np.sort(rng.choice(n_test, size=min(cfg.n_images, n_test), replace=False))
    shares = [idx[m::cfg.n_models] for m in range(cfg.n_models)]  # each model's images
    n_lips = _split(min(cfg.lipschitz_images, len(idx)), [len(sh) for sh in shares])
    raws = [_explain(ctx, cfg, c, torch.as_tensor(ds.X_test[sh]), sh, k, fill)
            for c, ds, sh, k in zip(cals, sets, shares, n_lips, strict=True)]
    ev = _pool_maps(ctx, raws)
    temps = sorted({*(float(t) for t in cfg.sweep_temperatures),
                    *(round(c.t_cal, 4) for c in cals)})
    sweeps = [_temperature_sweep(ctx, cfg, b, ds, c, r.x, temps, fill)
              for b, ds, c, r in zip(bases, sets, cals, raws, strict=True)]
    sweep = _pool_sweep(ctx, temps, sweeps, cals)

    _calibration_quality(ctx, cal)
    _map_change(ctx, ev)
    _faithfulness(ctx, ev)
    _readability(ctx, ev)
    _stability(ctx, ev)
    _calibrated_temperature(ctx, sweep, cal.t_cal)
    _figures(ctx, cfg, sets[0], cal, ev, sweep)


def _split(total: int, sizes: list[int]) -> list[int]:
    """``total`` shared out as evenly as possible over parts of ``sizes`` (the first parts
    take the remainder), none above its size."""
    m = len(sizes)
    return [min(size, total // m + (i < total % m)) for i, size in enumerate(sizes)]


# ==================================================================== computation
def _calibrate(ctx: StudyContext, cfg: Config, base: Model, ds: Any) -> _Calibration:
    """Temperature scaling and Dirichlet fitted on the validation split, scored on the test
    split (one model's rows of the ``calibration`` table)."""
    z_val = base.forward(ds.X_val, grad=False)
    z_test = base.forward(ds.X_test, grad=False)
    ts = TemperatureScaling().fit(z_val, ds.y_val)
    if ctx.quick:
        dirichlet = Dirichlet(reg_lambda=1.0, reg_mu=0.1).fit(z_val, ds.y_val)
    else:
        dirichlet = Dirichlet(grid=(1e-2, 1e-1, 1.0), seed=ctx.seed).fit(z_val, ds.y_val)
    t_cal = ts.temperature_
    cals: dict[str, Calibrator | None] = {"none": None, "temperature": ts,
                                           "dirichlet": dirichlet}
    models = {k: base if c is None else calibrated(base, c) for k, c in cals.items()}
    probs_test: dict[str, np.ndarray] = {}
    cal_rows = []
    for name, c in cals.items():
        with torch.no_grad():
            z = z_test if c is None else c(z_test)
        p = torch.softmax(z, dim=-1).cpu().numpy()
        probs_test[name] = p
        cal_rows.append({
            "calibrator": name,
            "ece": ece(p, ds.y_test, n_bins=cfg.ece_bins),
            "kde_ece": kde_ece(p, ds.y_test),
            "nll": nll(p, ds.y_test),
            "accuracy": accuracy(p, ds.y_test),
            "mean_confidence": float(p.max(1).mean()),
            "temperature": t_cal if name == "temperature" else None,
            "dirichlet_lambda": dirichlet.reg_lambda_ if name == "dirichlet" else None,
            "dirichlet_mu": dirichlet.reg_mu_ if name == "dirichlet" else None,
        })
    return _Calibration(models, {r["calibrator"]: r for r in cal_rows}, probs_test, z_test,
                        t_cal)


_MEANS = ("ece", "kde_ece", "nll", "accuracy", "mean_confidence")


def _pooled_calibration(ctx: StudyContext, cals: list[_Calibration], seeds: list[int]
                        ) -> _Calibration:
    """Record the ``calibration`` table (each model's rows, and their mean when there are
    several) and return what the claims read: the mean rows and the geometric mean of the
    fitted temperatures (the first model's models and test probabilities, for figures)."""
    if len(cals) == 1:
        ctx.table("calibration", list(cals[0].rows.values()))
        return cals[0]
    t_cal = float(np.exp(np.mean([math.log(c.t_cal) for c in cals])))
    mean = {name: {"calibrator": name,
                   **{k: float(np.mean([c.rows[name][k] for c in cals])) for k in _MEANS},
                   "temperature": t_cal if name == "temperature" else None,
                   "dirichlet_lambda": None, "dirichlet_mu": None}
            for name in CALIBRATORS}
    rows = [{"model_seed": seed, **r} for seed, c in zip(seeds, cals, strict=True)
            for r in c.rows.values()]
    ctx.table("calibration", rows + [{"model_seed": "mean", **r} for r in mean.values()])
    first = cals[0]
    return _Calibration(first.models, mean, first.probs_test, first.z_test, t_cal)


@dataclass
class _ModelMaps:
    """One model's maps and per-image scores (arrays over its images; ``lips`` over its
    first ``n_lip`` images)."""

    x: torch.Tensor
    idx: np.ndarray
    maps: dict[tuple[str, str], np.ndarray]
    curves: dict[tuple[str, str], Any]
    targets: dict[str, np.ndarray]
    random_auc: dict[str, np.ndarray]
    lips: dict[tuple[str, str], np.ndarray]
    seconds: dict[tuple[str, str], float]
    degen: dict[tuple[str, str], np.ndarray]
    kept_score: dict[str, np.ndarray]
    n_lip: int


def _explain(ctx: StudyContext, cfg: Config, cal: _Calibration, x: torch.Tensor,
             idx: np.ndarray, n_lip: int, fill: Blur) -> _ModelMaps:
    """Every calibrator x explainer's maps, deletion curves, BTR and Lipschitz constants (on
    the first ``n_lip`` images) of one model."""
    maps: dict[tuple[str, str], np.ndarray] = {}
    curves: dict[tuple[str, str], Any] = {}
    lips: dict[tuple[str, str], np.ndarray] = {}
    targets: dict[str, np.ndarray] = {}
    random_auc: dict[str, np.ndarray] = {}
    seconds: dict[tuple[str, str], float] = {}
    degen: dict[tuple[str, str], np.ndarray] = {}
    kept_score: dict[str, np.ndarray] = {}  # MP: class score after deletion / clean score
    jobs = [(c, e) for c in CALIBRATORS for e in EXPLAINERS]
    for cal_name, exp_name in progress_bar(jobs, total=len(jobs), enabled=ctx.progress,
                                           description="calibrate-to-interpret: maps"):
        model = cal.models[cal_name]
        explainer = _explainers(model, cfg, fill)[exp_name]
        t0 = time.perf_counter()
        exp = explainer.explain(x)
        seconds[(cal_name, exp_name)] = time.perf_counter() - t0
        maps[(cal_name, exp_name)] = minmax(exp.values)
        degen[(cal_name, exp_name)] = degenerate_maps(exp.values)
        targets[cal_name] = exp.target
        if "deleted_score" in exp.extra:  # MP: did the optimised mask delete the evidence?
            clean = model.predict_proba(x)[np.arange(len(x)), exp.target]
            kept_score[cal_name] = np.asarray(exp.extra["deleted_score"]) / np.maximum(clean,
                                                                                     1e-12)
        curves[(cal_name, exp_name)] = deletion_curve(
            model, x, exp.values, fill=fill, steps=cfg.deletion_steps)
        if cal_name not in random_auc:  # the random baseline depends on the model only
            btr = better_than_random(model, x, exp.values, fill=fill,
                                     steps=cfg.deletion_steps, n_orders=cfg.btr_orders,
                                     n_segments=cfg.btr_segments, seed=ctx.seed)
            random_auc[cal_name] = btr["random_auc"]
        lips[(cal_name, exp_name)] = local_lipschitz(
            _MinMaxExplainer(explainer), x[:n_lip], n_neighbours=cfg.lipschitz_neighbours,
            radius=cfg.lipschitz_radius, seed=ctx.seed)
    return _ModelMaps(x, idx, maps, curves, targets, random_auc, lips, seconds, degen,
                      kept_score, n_lip)


def _pool_maps(ctx: StudyContext, parts: list[_ModelMaps]) -> _Maps:
    """The models' images in one set (every model's Lipschitz images first, so that the
    Lipschitz constants cover the first ``n_lip`` images of the pool) and the
    ``explanations`` and ``degenerate_maps`` tables."""
    def pool(get: Any) -> Any:
        arrays = [get(p) for p in parts]
        heads = [a[:p.n_lip] for a, p in zip(arrays, parts, strict=True)]
        tails = [a[p.n_lip:] for a, p in zip(arrays, parts, strict=True)]
        if isinstance(arrays[0], torch.Tensor):
            return torch.cat(heads + tails)
        return np.concatenate(heads + tails)

    def pool_curve(key: tuple[str, str]) -> Curve:
        return Curve(fractions=parts[0].curves[key].fractions,
                     scores=pool(lambda p: p.curves[key].scores),
                     auc=pool(lambda p: np.asarray(p.curves[key].auc)),
                     target=pool(lambda p: np.asarray(p.curves[key].target)),
                     n_queries=sum(p.curves[key].n_queries for p in parts))

    jobs = [(c, e) for c in CALIBRATORS for e in EXPLAINERS]
    x, idx = pool(lambda p: p.x), pool(lambda p: p.idx)
    n_lip = sum(p.n_lip for p in parts)
    maps = {k: pool(lambda p, k=k: p.maps[k]) for k in jobs}
    curves = {k: pool_curve(k) for k in jobs}
    degen = {k: pool(lambda p, k=k: p.degen[k]) for k in jobs}
    lips = {k: np.concatenate([np.asarray(p.lips[k]) for p in parts]) for k in jobs}
    targets = {c: pool(lambda p, c=c: np.asarray(p.targets[c])) for c in CALIBRATORS}
    random_auc = {c: pool(lambda p, c=c: np.asarray(p.random_auc[c])) for c in CALIBRATORS}
    kept_score = {c: pool(lambda p, c=c: p.kept_score[c]) for c in parts[0].kept_score}
    seconds = {k: sum(p.seconds[k] for p in parts) for k in jobs}

    # an image whose map is degenerate (constant / NaN) under any calibrator is left out of
    # every aggregate and paired comparison of that explainer, and counted
    keep = {e: ~np.any([degen[(c, e)] for c in CALIBRATORS], axis=0) for e in EXPLAINERS}
    per: dict[str, dict[tuple[str, str], np.ndarray]] = {
        "auc": {k: np.asarray(curves[k].auc, dtype=np.float64) for k in jobs},
        "tv": {k: np.asarray(otsu_tv(maps[k]), dtype=np.float64) for k in jobs},
        "ssim": {k: np.asarray(ssim(maps[k], maps[("none", k[1])]), dtype=np.float64)
                 for k in jobs if k[0] != "none"},
        "btr": {k: (curves[k].auc < random_auc[k[0]]).astype(np.float64) for k in jobs},
    }
    rows, degen_rows = [], []
    for cal_name, exp_name in jobs:
        key = (cal_name, exp_name)
        k = keep[exp_name]
        auc = per["auc"][key][k]
        lk = k[:n_lip]
        rows.append({
            "calibrator": cal_name, "explainer": exp_name,
            "n_images_used": int(k.sum()), "degenerate_maps": int(degen[key].sum()),
            "ssim_mean": float(per["ssim"][key][k].mean()) if cal_name != "none" else None,
            "ssim_median": (float(np.median(per["ssim"][key][k])) if cal_name != "none"
                            else None),
            "deletion_auc": float(auc.mean()), "deletion_auc_se": standard_error(auc),
            "random_auc": float(random_auc[cal_name][k].mean()),
            "btr": float(per["btr"][key][k].mean()),
            "otsu_tv": float(per["tv"][key][k].mean()),
            "lipschitz_median": float(np.median(lips[key][lk])) if lk.any() else None,
            "lipschitz_mean": float(lips[key][lk].mean()) if lk.any() else None,
            "deletion_auc_all_images": float(per["auc"][key].mean()),
            "mp_score_kept_over_90pct": (int((kept_score[cal_name] > 0.9).sum())
                                         if exp_name == "MP" and cal_name in kept_score
                                         else None),
            "changed_predictions": int((targets[cal_name] != targets["none"]).sum()),
            "explain_seconds": round(seconds[key], 2),
        })
        for i in np.flatnonzero(degen[key]):
            degen_rows.append({"calibrator": cal_name, "explainer": exp_name,
                               "image": int(i), "test_index": int(idx[i]),
                               "deletion_auc": float(per["auc"][key][i]),
                               "reason": ("non-finite values" if not np.isfinite(
                                   np.asarray(maps[key][i], dtype=np.float64)).all()
                                   else "constant map")})
    ctx.table("explanations", rows)
    ctx.table("degenerate_maps", degen_rows or [{"calibrator": "-", "explainer": "-",
                                                 "image": None, "test_index": None,
                                                 "deletion_auc": None, "reason": "none found"}])
    return _Maps(x, idx, jobs, maps, curves, targets, random_auc, lips, per, keep,
                 {(r["calibrator"], r["explainer"]): r for r in rows}, n_lip, ctx.seed)


def _temperature_sweep(ctx: StudyContext, cfg: Config, base: Model, ds: Any,
                       cal: _Calibration, x: torch.Tensor, temps: list[float], fill: Blur
                       ) -> dict[float, tuple[np.ndarray, np.ndarray, tuple[float, ...]]]:
    """One model's MP deletion AUC and degenerate maps on ``x``, and its test KDE-ECE, ECE
    and NLL, at every temperature of ``temps``."""
    out = {}
    for t in progress_bar(temps, total=len(temps), enabled=ctx.progress,
                          description="calibrate-to-interpret: temperature sweep"):
        model = calibrated(base, TemperatureScaling.from_temperature(t))
        mp = _explainers(model, cfg, fill)["MP"]
        values = mp.explain(x).values
        auc = np.asarray(deletion_curve(model, x, values, fill=fill,
                                        steps=cfg.deletion_steps).auc, dtype=np.float64)
        p = torch.softmax(cal.z_test / t, dim=-1).cpu().numpy()
        out[t] = (auc, degenerate_maps(values),
                  (kde_ece(p, ds.y_test), ece(p, ds.y_test), nll(p, ds.y_test)))
    return out


def _pool_sweep(ctx: StudyContext, temps: list[float],
                parts: list[dict[float, tuple[np.ndarray, np.ndarray, tuple[float, ...]]]],
                cals: list[_Calibration]) -> _Sweep:
    """The models' sweeps in one (images pooled, calibration numbers averaged over the
    models): the ``temperature_sweep`` table."""
    sweep_auc = {t: np.concatenate([p[t][0] for p in parts]) for t in temps}
    sweep_degen = {t: np.concatenate([p[t][1] for p in parts]) for t in temps}
    sweep_ece = {t: tuple(float(np.mean([p[t][2][i] for p in parts])) for i in range(3))
                 for t in temps}
    fitted = {round(c.t_cal, 4) for c in cals}
    # images with a degenerate MP map at any temperature are left out of every sweep mean
    sweep_keep = ~np.any([sweep_degen[t] for t in temps], axis=0)
    sweep_rows = []
    for t in temps:
        auc = sweep_auc[t]
        sweep_rows.append({"temperature": t, "calibrated": bool(t in fitted),
                           "n_images_used": int(sweep_keep.sum()),
                           "degenerate_maps": int(sweep_degen[t].sum()),
                           "mp_deletion_auc": float(auc[sweep_keep].mean()),
                           "mp_deletion_auc_se": standard_error(auc[sweep_keep]),
                           "mp_deletion_auc_all_images": float(auc.mean()),
                           "kde_ece": sweep_ece[t][0], "ece": sweep_ece[t][1],
                           "nll": sweep_ece[t][2]})
    ctx.table("temperature_sweep", sweep_rows)
    return _Sweep(temps, sweep_rows, sweep_auc, sweep_keep)


def _figures(ctx: StudyContext, cfg: Config, ds: Any, cal: _Calibration, ev: _Maps,
             sweep: _Sweep) -> None:
    t_cal = cal.t_cal
    ctx.figure("maps_grid", _plot_maps(ev.x, ev.maps, ev.targets, ev.idx),
               caption="Inputs beside their min-max saliency maps for each calibrator "
               "(rows) and explainer (columns); the title of each row gives the explained "
               "class")
    from calix.plot import reliability_diagram

    names = {"none": "uncalibrated",  # several models: the first one drawn, t_cal their mean
             "temperature": ("temperature" if cfg.n_models > 1 else
                             f"temperature (T = {t_cal:.2f})"),
             "dirichlet": "Dirichlet"}
    ctx.figure("reliability", reliability_diagram(
        {names[k]: (p, ds.y_test) for k, p in cal.probs_test.items()}, n_bins=cfg.ece_bins,
        title="Reliability of the zoo CNN on digits-noisy (test split)"),
        caption="Reliability diagrams before and after calibration (test split"
        + (", the first model)" if cfg.n_models > 1 else ")"))
    ctx.figure("temperature_sweep", _plot_sweep(sweep.rows, t_cal),
               caption="MP deletion AUC against a fixed temperature (left) and against the "
               "test ECE it gives (right); the star marks the fitted temperature")
    ctx.figure("deletion_curves", _plot_deletion(ev.curves, ev.random_auc),
               caption="Mean normalised deletion curves (blur fill) per explainer: uncalibrated "
               "solid, calibrated dashed; the legend gives the AUCs and the random-superpixel "
               "baseline's")
    ctx.figure("metrics", _plot_metrics(ev.row),
               caption="BTR, Otsu-TV and deletion AUC per explainer and calibrator (the "
               "paper's Figure 7)")
    ctx.figure("ssim_lipschitz", _plot_distributions(ev.maps, ev.lips, len(ev.x)),
               caption="SSIM between calibrated and uncalibrated maps (left) and local "
               "Lipschitz constants of min-max maps (right, log scale: zeros from constant "
               "maps are not drawn) per explainer")
    ctx.arrays("maps", indices=ev.idx, **{f"{c}__{e}": ev.maps[(c, e)] for c, e in ev.jobs})
    ctx.arrays("deletion", fractions=ev.curves[("none", "MP")].fractions,
               **{f"{c}__{e}": ev.curves[(c, e)].scores for c, e in ev.jobs},
               **{f"random_auc__{c}": ev.random_auc[c] for c in CALIBRATORS})
    ctx.arrays("temperature_sweep", temperatures=np.array(sweep.temps),
               auc=np.stack([sweep.auc[t] for t in sweep.temps]))


# ==================================================================== claims
# The paper's findings, checks of the protocol and calix's decision rules, one function per
# section of the paper. Every comparison is paired by image and decided by a one-sided paired
# t-test at ALPHA; images whose map is degenerate (constant or NaN) under any calibrator are
# left out of that explainer's comparisons and counted in the evidence.
def _calibration_quality(ctx: StudyContext, calib: _Calibration) -> None:
    """Table 1: the calibration step itself."""
    cal, t_cal = calib.rows, calib.t_cal
    paper_factor = {"temperature": 2.49, "dirichlet": 1.73}
    factor = {c: cal["none"]["kde_ece"] / max(cal[c]["kde_ece"], 1e-12) for c in CALIBRATED}
    factor_binned = {c: cal["none"]["ece"] / max(cal[c]["ece"], 1e-12) for c in CALIBRATED}
    ctx.claim(
        "Post-hoc calibration is effective: it divides the KDE-ECE of the overconfident model "
        "(the mean over the run's models) by at least the paper's smallest factor in Table 1 "
        "(2.49x for temperature scaling, 1.73x for Dirichlet; ResNet50 / Food101)",
        all(factor[c] >= paper_factor[c] for c in CALIBRATED),
        {"kde_ece": {c: round(cal[c]["kde_ece"], 4) for c in CALIBRATORS},
         "binned_ece": {c: round(cal[c]["ece"], 4) for c in CALIBRATORS},
         "reduction_factor": {c: round(v, 3) for c, v in factor.items()},
         "paper_smallest_factor": paper_factor, "temperature": round(t_cal, 3)},
        paper="Table 1: ECE_conf 0.200 -> 0.044 / 0.048 (VGG16 CIFAR-100), 0.148 -> 0.046 / "
        "0.032 (ResNet32 CIFAR-100), 0.080 -> 0.032 / 0.046 (ResNet50 Food101): factors 2.5 "
        "to 6.7 for temperature scaling, 1.7 to 7.6 for Dirichlet",
        quote="ECEs and accuracies of the different models, given in Table 1, confirm the "
        "initial mis-calibration of the raw models, and the effectiveness of the calibration "
        "step.",
        sensitivity={
            "any decrease of the KDE-ECE": all(factor[c] > 1 for c in CALIBRATED),
            "binned ECE (15 bins), the same factors": all(factor_binned[c] >= paper_factor[c]
                                                         for c in CALIBRATED),
            "factor >= 1.73 for both calibrators": all(factor[c] >= 1.73 for c in CALIBRATED)})


def _map_change(ctx: StudyContext, ev: _Maps) -> None:
    """Figure 4: how much calibration changes the maps (SSIM)."""
    ssim_ci = {f"{c}/{e}": bootstrap_mean_ci(ev.per["ssim"][(c, e)][ev.keep[e]], seed=ev.seed)
               for c in CALIBRATED for e in EXPLAINERS}
    ssim_mean = {f"{c}/{e}": round(ev.mean_of("ssim", c, e), 3)
                 for c in CALIBRATED for e in EXPLAINERS}
    ctx.claim(
        "Calibration changes the saliency maps of every method: for every calibrator x "
        "explainer the 95% bootstrap interval (over images) of the mean SSIM between "
        "calibrated and uncalibrated maps lies below 0.95 (calix's threshold: the paper gives "
        "no number)",
        all(v[1] < 0.95 for v in ssim_ci.values()),
        {"mean_ssim": ssim_mean, "ssim_ci95": {k: [round(a, 3), round(b, 3)]
                                               for k, (a, b) in ssim_ci.items()},
         "images_excluded_degenerate": ev.excluded},
        paper="Figure 4: SSIM distributions of calibrated vs uncalibrated maps (CIFAR-100, "
        "Food-101, Birds)",
        quote="for all studied interpretation methods, there is a significant difference "
        "between saliency maps produced from the calibrated and uncalibrated models",
        sensitivity={"interval below 0.90": all(v[1] < 0.90 for v in ssim_ci.values()),
                     "interval below 0.98": all(v[1] < 0.98 for v in ssim_ci.values()),
                     "mean below 0.95 (no interval)": all(v < 0.95 for v in ssim_mean.values())})

    def agnostic_vs_gradient(c: str, mask: np.ndarray) -> dict[str, Any]:
        def group(names: tuple[str, ...]) -> np.ndarray:
            return np.mean([ev.per["ssim"][(c, e)][mask] for e in names], axis=0)

        return paired(group(AGNOSTIC), group(GRADIENT), alternative="less")

    keep_all = ev.keep_all
    grp = {c: agnostic_vs_gradient(c, keep_all) for c in CALIBRATED}
    grp_all = {c: agnostic_vs_gradient(c, ev.every) for c in CALIBRATED}
    ctx.claim(
        "The maps of the model-agnostic methods (RISE, MP) change more than those of the "
        "gradient methods (Sensitivity, IG): per image, the mean SSIM of RISE and MP is lower "
        f"than that of Sensitivity and IG, for both calibrators ({SIG})",
        every(grp),
        {"agnostic_minus_gradient_ssim": _briefs(grp),
         "images_excluded_degenerate": int((~keep_all).sum())},
        paper="Figure 4 (SSIM distributions per method)",
        quote="This impact is particularly important on model-agnostic interpretation "
        "methods like MP and RISE.",
        sensitivity={**nearest_rules(grp), "degenerate maps included": every(grp_all)})


def _faithfulness(ctx: StudyContext, ev: _Maps) -> None:
    """Section 4.4, Figures 6 and 7: faithfulness (deletion AUC, better-than-random ratio)."""
    row, excluded = ev.row, ev.excluded
    low = ev.vs_uncalibrated("auc", AGNOSTIC, "less")
    low_all = ev.vs_uncalibrated("auc", AGNOSTIC, "less", ev.every)
    ctx.claim(
        "Calibration lowers (improves) the deletion AUC of the model-agnostic methods RISE and "
        f"MP, for both calibrators ({SIG}; images with a degenerate map left out)",
        every(low),
        {"calibrated_minus_uncalibrated_auc": _briefs(low),
         "images_excluded_degenerate": {e: excluded[e] for e in AGNOSTIC},
         "deletion_auc": {f"{c}/{e}": round(row[(c, e)]["deletion_auc"], 4)
                          for c in CALIBRATORS for e in AGNOSTIC}},
        paper="Figure 7, second line: lower deletion areas for MP and RISE after calibration",
        quote="MP and RISE are also the most positively impacted by the calibration of the "
        "model.",
        sensitivity={
            **nearest_rules(low),
            "degenerate maps included, lower mean": all(t["mean_diff"] < 0
                                                        for t in low_all.values()),
            "degenerate maps included, t-test": every(low_all)})

    worse = ev.vs_uncalibrated("auc", EXPLAINERS, "greater")
    worse_all = ev.vs_uncalibrated("auc", EXPLAINERS, "greater", ev.every)
    two_se = {k: t["mean_diff"] > 2 * t["se"] for k, t in worse.items()}
    ctx.claim(
        "In the worst case calibration does not hurt faithfulness: no calibrator x explainer "
        f"has a deletion AUC significantly above the uncalibrated one ({SIG}; images with a "
        "degenerate map left out)",
        not any(t["significant"] for t in worse.values()),
        {"significantly_worse": {k: t["significant"] for k, t in worse.items()},
         "calibrated_minus_uncalibrated_auc": _briefs(worse),
         "images_excluded_degenerate": excluded, "n_images": ev.n},
        paper="Section 4.4 and the conclusion ('in the worst case neutral')",
        quote="in worst case the interpretability is not impacted by the calibration",
        sensitivity={
            "mean difference > 2 standard errors": not any(two_se.values()),
            "Wilcoxon signed-rank instead of t": not any(t["significant_wilcoxon"]
                                                         for t in worse.values()),
            "degenerate maps included": not any(t["significant"]
                                                for t in worse_all.values())})

    def between(e1: str, e2: str, c: str = "none") -> dict[str, Any]:
        k = ev.keep[e1] & ev.keep[e2]
        return paired(ev.per["auc"][(c, e1)][k], ev.per["auc"][(c, e2)][k], alternative="less")

    order_tests = {"MP < RISE": between("MP", "RISE"),
                   "RISE < Sensitivity": between("RISE", "Sensitivity"),
                   "RISE < IG": between("RISE", "IG")}
    order = sorted(EXPLAINERS, key=lambda e: row[("none", e)]["deletion_auc"])
    ctx.claim(
        "Without calibration MP is the most faithful method, followed by RISE: per image, "
        "MP's deletion AUC is below RISE's and RISE's below those of Sensitivity and IG "
        f"({SIG} for each of the three comparisons)",
        every(order_tests),
        {"comparisons": _briefs(order_tests),
         "uncalibrated_deletion_auc": {e: round(row[("none", e)]["deletion_auc"], 4)
                                       for e in EXPLAINERS},
         "ranking_of_means": order, "images_excluded_degenerate": excluded},
        paper="Figure 6 / 7: deletion curves and areas per method before calibration",
        quote="Meaningfull perturbation being the most faithful with a predicted score quickly "
        "dropping as the percentage of neutralized pixels grows, followed by RISE, the other "
        "model-agnostic method.",
        sensitivity={
            "ranking of the means only": order[:2] == ["MP", "RISE"],
            "Wilcoxon signed-rank instead of t": every(order_tests, "significant_wilcoxon")})

    most = {}
    for c in CALIBRATED:
        for e in EXPLAINERS:
            if e != "MP":
                k = ev.keep["MP"] & ev.keep[e]
                most[f"{c}: MP vs {e}"] = paired(ev.drop(c, "MP", k), ev.drop(c, e, k))
    most_all = {k: paired(ev.drop(k.split(":")[0], "MP", ev.every),
                          ev.drop(k.split(":")[0], k.split(" vs ")[1], ev.every)) for k in most}
    drops = {c: {e: round(float(ev.drop(c, e, ev.keep[e]).mean()), 4) for e in EXPLAINERS}
             for c in CALIBRATED}
    ctx.claim(
        "MP is the method calibration improves most: per image, MP's drop of deletion AUC "
        f"exceeds that of every other explainer, for both calibrators ({SIG})",
        every(most),
        {"mp_drop_minus_other_drop": _briefs(most),
         "mean_deletion_auc_drop": drops, "images_excluded_degenerate": excluded},
        paper="Section 4.4 (Figure 7, deletion areas)",
        quote="The most faithful method without calibration, namely MP, is also the most "
        "improved method",
        sensitivity={
            "largest mean drop only (no test)": all(max(d, key=d.get) == "MP"
                                                    for d in drops.values()),
            "degenerate maps included, largest mean drop": all(
                t["mean_diff"] > 0 for t in most_all.values())})

    kept = {k: v[ev.keep[k[1]]] for k, v in ev.per["btr"].items()}  # per image, 0 or 1
    btr = {k: float(v.mean()) for k, v in kept.items()}
    btr_all = {k: float(ev.per["btr"][k].mean()) for k in ev.per["btr"]}
    raise_tests = {f"{c}/{e}": paired_binary(kept[(c, e)], kept[("none", e)])
                   for c in CALIBRATED for e in EXPLAINERS}
    not_raised = [k for k, t in raise_tests.items() if not t["significant"]]
    lowered = [f"{c}/{e}" for c in CALIBRATED for e in EXPLAINERS
               if btr[(c, e)] < btr[("none", e)]]
    # the exact one-sided test reaches p < ALPHA only with at least `room` discordant images,
    # so an explainer with fewer images failing without calibration cannot show a raise
    room = math.ceil(-math.log2(ALPHA))
    failing = {e: int((kept[("none", e)] == 0).sum()) for e in EXPLAINERS}
    untestable = [f"{c}/{e}" for c in CALIBRATED for e in EXPLAINERS if failing[e] < room]
    ctx.claim(
        "Calibration raises the better-than-random ratio (BTR) in every calibrator x explainer "
        "case but at most one, as the paper states: per image, the map beats random deletion "
        "with the calibrated model and not without it more often than the reverse (one-sided "
        f"exact McNemar test over images, p < {ALPHA}); a case with fewer than {room} images "
        "failing without calibration cannot reach significance and counts as not raised "
        "(images with a degenerate map left out)",
        len(not_raised) <= 1,
        {"btr": {f"{c}/{e}": round(btr[(c, e)], 3) for c in CALIBRATORS for e in EXPLAINERS},
         "raised_vs_uncalibrated": {k: {"up": t["up"], "down": t["down"],
                                        "p": float(f"{t['p']:.3g}")}
                                    for k, t in raise_tests.items()},
         "not_significantly_raised": not_raised, "lowered": lowered,
         "images_failing_uncalibrated": failing, "untestable": untestable,
         "images_excluded_degenerate": excluded},
        paper="Figure 7, third line (BTR per model, method and calibrator)",
        quote="This BTR is always improved, except for one model/method case.",
        sensitivity={
            "untestable cases left out (at least one testable case)": len(untestable) < len(
                raise_tests) and sum(k not in untestable for k in not_raised) <= 1,
            "strictly higher BTR (no test), all but one case": sum(
                not btr[(c, e)] > btr[("none", e)] for c in CALIBRATED
                for e in EXPLAINERS) <= 1,
            "not lowered (ties count as improved), all but one case": len(lowered) <= 1,
            "degenerate maps included, strictly higher BTR (no test) in all but one case": sum(
                not btr_all[(c, e)] > btr_all[("none", e)] for c in CALIBRATED
                for e in EXPLAINERS) <= 1})

    def mean_drop(c: str, mask: np.ndarray) -> np.ndarray:
        return np.mean([ev.drop(c, e, mask) for e in EXPLAINERS], axis=0)

    def btr_gain_per_image(c: str, mask: np.ndarray) -> np.ndarray:
        return np.mean([ev.per["btr"][(c, e)][mask] - ev.per["btr"][("none", e)][mask]
                        for e in EXPLAINERS], axis=0)

    keep_all = ev.keep_all
    dvt = paired(mean_drop("dirichlet", keep_all), mean_drop("temperature", keep_all))
    gains = {c: btr_gain_per_image(c, keep_all) for c in CALIBRATED}
    gain = paired(gains["dirichlet"], gains["temperature"])
    btr_gain = {c: float(v.mean()) for c, v in gains.items()}
    ctx.claim(
        "Dirichlet calibration improves deletion AUC and BTR more than temperature scaling: "
        "per image, the drop of deletion AUC and the gain in better-than-random outcomes "
        f"(each the mean over the four explainers) are larger with Dirichlet ({SIG}, both)",
        dvt["significant"] and gain["significant"],
        {"dirichlet_minus_temperature_drop": brief(dvt, wilcoxon=True),
         "dirichlet_minus_temperature_btr_gain": brief(gain, wilcoxon=True),
         "mean_btr_gain": {c: round(v, 4) for c, v in btr_gain.items()},
         "changed_predictions_dirichlet": row[("dirichlet", "MP")]["changed_predictions"],
         "images_excluded_degenerate": int((~keep_all).sum())},
        paper="Section 4.4 (Dirichlet can change the predicted class; temperature scaling "
        "cannot)",
        quote="We read the greater impact of the Dirichlet calibration wrt the Temperature "
        "scaling, on both the BTR and deletion area",
        sensitivity={
            "larger mean drop and BTR gain not smaller (no test, ties accepted)":
                dvt["mean_diff"] > 0 and btr_gain["dirichlet"] >= btr_gain["temperature"],
            "larger mean drop and strictly larger BTR gain (no test)":
                dvt["mean_diff"] > 0 and btr_gain["dirichlet"] > btr_gain["temperature"],
            "Wilcoxon signed-rank instead of t": dvt["significant_wilcoxon"]
                and gain["significant_wilcoxon"]})

    rand = {c: round(float(ev.random_auc[c].mean()), 4) for c in CALIBRATORS}
    rel = {c: round(abs(rand[c] - rand["none"]) / max(rand["none"], 1e-12), 4)
           for c in CALIBRATED}
    ctx.claim(
        "Normalising the deletion curves introduces no bias: the random-superpixel baseline "
        "has nearly the same deletion AUC on calibrated and uncalibrated models (within 10%, "
        "calix's threshold)",
        all(v < 0.10 for v in rel.values()),
        {"random_auc": rand, "relative_difference": rel},
        kind="check",
        paper="Section 4.4: a check of the protocol (the normalisation), not an effect of "
        "calibration",
        quote="One can also confirm a posteriori that the normalization of the deletion "
        "curves does not introduce any bias, since the same random saliency maps applied to "
        "the calibrated and uncalibrated models produce similar curves.",
        sensitivity={"within 5%": all(v < 0.05 for v in rel.values()),
                     "within 20%": all(v < 0.20 for v in rel.values())})


def _readability(ctx: StudyContext, ev: _Maps) -> None:
    """Figure 7, first line: readability (the Otsu-TV of the maps)."""
    row = ev.row
    tv_low = ev.vs_uncalibrated("tv", AGNOSTIC, "less")
    tv_low_all = ev.vs_uncalibrated("tv", AGNOSTIC, "less", ev.every)
    tv = {f"{c}/{e}": round(row[(c, e)]["otsu_tv"], 5) for c in CALIBRATORS for e in EXPLAINERS}
    ctx.claim(
        "Calibration lowers the Otsu-TV of the model-agnostic methods (RISE, MP), for both "
        f"calibrators ({SIG})",
        every(tv_low),
        {"calibrated_minus_uncalibrated_tv": _briefs(tv_low),
         "otsu_tv": {k: v for k, v in tv.items() if k.split("/")[1] in AGNOSTIC},
         "images_excluded_degenerate": {e: ev.excluded[e] for e in AGNOSTIC}},
        paper="Figure 7, first line (about 10x lower Otsu-TV for MP)",
        quote="Otsu-TV is always improved (lowered) by calibration for model-agnostic methods",
        sensitivity={**nearest_rules(tv_low), "degenerate maps included": every(tv_low_all)})
    tv_up = ev.vs_uncalibrated("tv", GRADIENT, "greater")
    ctx.claim(
        "Calibration does not make the gradient methods' maps noisier: the Otsu-TV of "
        f"Sensitivity and IG is not significantly raised ({SIG}) for either calibrator",
        not any(t["significant"] for t in tv_up.values()),
        {"calibrated_minus_uncalibrated_tv": _briefs(tv_up),
         "otsu_tv": {k: v for k, v in tv.items() if k.split("/")[1] in GRADIENT}},
        paper="Figure 7, first line",
        quote="or at worst unaffected for other methods",
        sensitivity={
            "mean rises by at most 10%": not any(
                row[(c, e)]["otsu_tv"] > 1.10 * row[("none", e)]["otsu_tv"]
                for c in CALIBRATED for e in GRADIENT),
            "Wilcoxon signed-rank instead of t": not any(t["significant_wilcoxon"]
                                                         for t in tv_up.values())})


def _stability(ctx: StudyContext, ev: _Maps) -> None:
    """Figure 9: stability (the local Lipschitz constant of the maps)."""
    lips, n_lip = ev.lips, ev.n_lip
    lk = ev.keep["MP"][:n_lip]
    log_l = {c: np.log(np.maximum(np.asarray(lips[(c, "MP")], dtype=np.float64), 1e-12))
             for c in CALIBRATORS}
    lip_t = {c: paired(log_l[c][lk], log_l["none"][lk], alternative="less")
             for c in CALIBRATED}
    lip = {f"{c}/{e}": (round(float(np.median(lips[(c, e)][ev.keep[e][:n_lip]])), 3)
                        if ev.keep[e][:n_lip].any() else None)
           for c in CALIBRATORS for e in EXPLAINERS}
    ctx.claim(
        "Calibration makes MP more stable: per image, the log local Lipschitz constant of its "
        f"maps is lower with calibration, for both calibrators ({SIG}; {int(lk.sum())} images "
        f"in this run, so every one of them must agree)",
        every(lip_t),
        {"log_lipschitz_calibrated_minus_uncalibrated": _briefs(lip_t),
         "median_lipschitz": lip, "n_images": int(lk.sum()),
         "images_excluded_degenerate": int((~lk).sum())},
        paper="Figure 9 (150 CIFAR-100 images x 40 neighbours)",
        quote="calibration, while having no robustness impact on most methods, considerably "
        "improves the stability of MP",
        sensitivity={
            "lower median only (no test)": all(
                np.median(lips[(c, "MP")][lk]) < np.median(lips[("none", "MP")][lk])
                for c in CALIBRATED) if lk.any() else False,
            "Wilcoxon signed-rank instead of t": every(lip_t, "significant_wilcoxon")})


def _calibrated_temperature(ctx: StudyContext, sw: _Sweep, t_cal: float) -> None:
    """Figure 8: MP's deletion AUC over fixed temperatures."""
    sweep, sweep_auc, sweep_keep = sw.rows, sw.auc, sw.keep
    ts_arr = np.array([r["temperature"] for r in sweep])
    ece_arr = np.array([r["kde_ece"] for r in sweep])
    binned_arr = np.array([r["ece"] for r in sweep])
    auc_kept = np.array([sweep_auc[t][sweep_keep].mean() for t in ts_arr])
    auc_every = np.array([sweep_auc[t].mean() for t in ts_arr])

    def argmin_within(a: np.ndarray, factor: float) -> bool:
        return abs(math.log(float(ts_arr[int(np.argmin(a))]) / t_cal)) <= math.log(factor) + 1e-9

    t_fit = float(ts_arr[int(np.argmin(np.abs(np.log(ts_arr / t_cal))))])
    t_min = float(ts_arr[int(np.argmin(auc_kept))])
    fit_vs_min = paired(sweep_auc[t_fit][sweep_keep], sweep_auc[t_min][sweep_keep])
    ctx.claim(
        "Over fixed temperatures the MP deletion AUC (mean over images with no degenerate MP "
        "map at any temperature) is lowest near the calibrated temperature: the minimising "
        "temperature lies within a factor 2 of the fitted one (calix's tolerance: one step of "
        "the quick grid)",
        argmin_within(auc_kept, 2.0),
        {"fitted_temperature": round(t_cal, 3), "argmin_temperature": t_min,
         "argmin_temperature_all_images": float(ts_arr[int(np.argmin(auc_every))]),
         "fitted_minus_minimum_auc": brief(fit_vs_min, wilcoxon=True),
         "lowest_test_ece_temperature": float(ts_arr[int(np.argmin(ece_arr))]),
         "images_used": int(sweep_keep.sum()),
         "images_excluded_degenerate": int((~sweep_keep).sum()),
         "mp_deletion_auc": dict(zip(ts_arr.round(3).tolist(), auc_kept.round(4).tolist(),
                                     strict=True))},
        paper="Figure 8 (VGG16 and ResNet32 on CIFAR-100)",
        quote="the minimum of the deletion area is obtained when the model is calibrated",
        sensitivity={
            "within a factor 1.5": argmin_within(auc_kept, 1.5),
            "within a factor 3": argmin_within(auc_kept, 3.0),
            "degenerate maps included, factor 2": argmin_within(auc_every, 2.0),
            f"fitted T's AUC not significantly above the minimum (p < {ALPHA})":
                not fit_vs_min["significant"]})

    rho = _spearman(ece_arr, auc_kept)
    rng = np.random.default_rng(ctx.seed)
    kept_idx = np.flatnonzero(sweep_keep)
    stack = np.stack([sweep_auc[t] for t in ts_arr])  # (n_temps, n)
    boot = []
    for _ in range(1000):
        pick = kept_idx[rng.integers(0, len(kept_idx), len(kept_idx))] if len(kept_idx) else []
        boot.append(_spearman(ece_arr, stack[:, pick].mean(1)) if len(pick) else 0.0)
    share = float(np.mean(np.asarray(boot) > 0))
    ctx.claim(
        "Across temperatures the MP deletion AUC correlates positively with the ECE: Spearman "
        "rho > 0 in at least 95% of 1000 bootstrap resamples of the images (images with a "
        "degenerate MP map left out)",
        share >= 0.95,
        {"spearman_rho": round(rho, 3), "share_of_resamples_with_rho_above_0": round(share, 3),
         "spearman_rho_binned_ece": round(_spearman(binned_arr, auc_kept), 3),
         "temperatures": ts_arr.round(3).tolist(), "kde_ece": ece_arr.round(4).tolist(),
         "mp_deletion_auc": auc_kept.round(4).tolist(),
         "images_excluded_degenerate": int((~sweep_keep).sum())},
        paper="Figure 8, second plot",
        quote="Interestingly the second plot highlights a positive correlation between the "
        "mean AUC (deletion area) and the ECE.",
        sensitivity={"rho > 0 on the means (no resampling)": rho > 0,
                     "binned ECE, rho > 0 on the means": _spearman(binned_arr, auc_kept) > 0,
                     "degenerate maps included, rho > 0 on the means":
                         _spearman(ece_arr, auc_every) > 0})

# ==================================================================== figures
_LABEL = {"none": "uncalibrated", "temperature": "temperature", "dirichlet": "Dirichlet"}
_SHORT = {"Sensitivity": "Sens", "IG": "IG", "RISE": "RISE", "MP": "MP"}


def _plot_maps(x: torch.Tensor, maps: dict[tuple[str, str], np.ndarray],
               targets: dict[str, np.ndarray], idx: np.ndarray, n_show: int = 2) -> Any:
    from calix.plot import subplots

    n_show = min(n_show, len(x))
    n_rows, n_cols = n_show * len(CALIBRATORS), len(EXPLAINERS) + 1
    fig, axes = subplots(n_rows, n_cols, figsize=(1.7 * n_cols, 1.75 * n_rows),
                             squeeze=False)
    for i in range(n_show):
        for j, c in enumerate(CALIBRATORS):
            r = i * len(CALIBRATORS) + j
            axes[r, 0].imshow(x[i, 0].numpy(), cmap="gray")
            axes[r, 0].set_ylabel(f"test #{int(idx[i])}\n{_LABEL[c]}\nclass "
                                  f"{int(targets[c][i])}", fontsize=7)
            for k, e in enumerate(EXPLAINERS):
                axes[r, k + 1].imshow(maps[(c, e)][i], cmap="jet", vmin=0, vmax=1)
                if r == 0:
                    axes[r, k + 1].set_title(e, fontsize=9)
            if r == 0:
                axes[r, 0].set_title("input", fontsize=9)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def _plot_sweep(rows: list[dict[str, Any]], t_cal: float) -> Any:
    from calix.plot import subplots

    t = np.array([r["temperature"] for r in rows])
    a = np.array([r["mp_deletion_auc"] for r in rows])
    se = np.array([r["mp_deletion_auc_se"] for r in rows])
    e = np.array([r["kde_ece"] for r in rows])
    cal = np.array([r["calibrated"] for r in rows])
    fig, (ax1, ax2) = subplots(1, 2, figsize=(9, 3.4))
    ax1.errorbar(t, a, yerr=se, fmt="o-", capsize=3)
    ax1.plot(t[cal], a[cal], "r*", ms=14, label=f"fitted T = {t_cal:.2f}")
    ax1.axvline(1.0, color="grey", ls=":", lw=1)
    ax1.set_xscale("log")
    ax1.set_xticks(t)
    ax1.set_xticklabels([f"{v:.3g}" for v in t], fontsize=7, rotation=45)
    ax1.minorticks_off()
    ax1.set_xlabel("temperature T")
    ax1.set_ylabel("MP deletion AUC (lower is better)")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    over = t < t_cal
    ax2.plot(e[over], a[over], "o-", label="T < fitted (overconfident)")
    ax2.plot(e[~over], a[~over], "s-", label="T >= fitted (underconfident)")
    ax2.plot(e[cal], a[cal], "r*", ms=14)
    ax2.set_xlabel("test KDE-ECE")
    ax2.set_ylabel("MP deletion AUC")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _plot_deletion(curves: dict[tuple[str, str], Any], random_auc: dict[str, np.ndarray]) -> Any:
    from calix.plot import subplots

    fig, axes = subplots(1, len(EXPLAINERS), figsize=(3.4 * len(EXPLAINERS), 3.2),
                             sharey=True)
    styles = {"none": ("k", "-"), "temperature": ("tab:blue", "--"),
              "dirichlet": ("tab:orange", "--")}
    for ax, e in zip(axes, EXPLAINERS, strict=True):
        for c in CALIBRATORS:
            cv = curves[(c, e)]
            col, ls = styles[c]
            ax.plot(100 * cv.fractions, cv.scores.mean(0), color=col, ls=ls,
                    label=f"{_LABEL[c]} (AUC {cv.auc.mean():.3f}, random "
                    f"{random_auc[c].mean():.3f})")
        ax.set_title(e, fontsize=10)
        ax.set_xlabel("% pixels removed (blur)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    axes[0].set_ylabel("normalised class probability")
    fig.tight_layout()
    return fig


def _plot_metrics(row: dict[tuple[str, str], dict[str, Any]]) -> Any:
    from calix.plot import subplots

    metrics = (("btr", "BTR (higher is better)"), ("otsu_tv", "Otsu-TV (lower is better)"),
               ("deletion_auc", "deletion AUC (lower is better)"))
    fig, axes = subplots(1, 3, figsize=(12, 3.2))
    pos = np.arange(len(EXPLAINERS))
    width = 0.8 / len(CALIBRATORS)
    for ax, (key, title) in zip(axes, metrics, strict=True):
        for k, c in enumerate(CALIBRATORS):
            ax.bar(pos + (k - 1) * width, [row[(c, e)][key] for e in EXPLAINERS], width,
                   label=_LABEL[c])
        ax.set_xticks(pos)
        ax.set_xticklabels(EXPLAINERS)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def _plot_distributions(maps: dict[tuple[str, str], np.ndarray],
                        lips: dict[tuple[str, str], np.ndarray], n: int) -> Any:
    from calix.plot import subplots

    fig, (ax1, ax2) = subplots(1, 2, figsize=(11, 3.4))
    cals = ("temperature", "dirichlet")
    data, labels = [], []
    for e in EXPLAINERS:
        for c in cals:
            data.append(ssim(maps[(c, e)], maps[("none", e)]))
            labels.append(f"{e}\n{c[:4]}")
    ax1.boxplot(data)
    ax1.set_xticks(np.arange(1, len(labels) + 1))
    ax1.set_xticklabels(labels, fontsize=7)
    ax1.set_ylabel(f"SSIM calibrated vs uncalibrated ({n} images)")
    ax1.grid(alpha=0.3, axis="y")
    data, labels = [], []
    for e in EXPLAINERS:
        for c in CALIBRATORS:
            data.append(lips[(c, e)])
            labels.append(f"{_SHORT[e]}\n{c[:4]}")
    ax2.boxplot(data)
    ax2.set_xticks(np.arange(1, len(labels) + 1))
    ax2.set_xticklabels(labels, fontsize=7)
    ax2.set_yscale("log")
    ax2.set_ylabel("local Lipschitz constant (min-max maps)")
    ax2.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig
