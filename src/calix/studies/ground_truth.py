"""Ground truth: explainers, calibration and FPA judged against explanations known to be right.

calix's own study (no paper reproduced; every claim is a calix ``extension`` or a ``check``),
on the generated sets of :mod:`calix.groundtruth`:

1. **Tables.** The zoo MLP on ``gt-logistic`` (a logistic model on 8 standard normal features,
   5 informative; the true attribution is the interventional Shapley value of the log-odds,
   ``w ⊙ x``). Every tabular explainer explains the probability of class 1 on test rows, for
   the uncalibrated, temperature-scaled and ReCalX-calibrated model; agreement with the
   truth is the per-row Spearman correlation of |attribution| with |truth| and the top-3
   feature agreement (:func:`calix.metrics.agreement.feature_agreement`).
2. **Images.** The zoo CNN on ``gt-textures`` (64×64: the class is the texture of one patch
   placed at random among distractor patches on a textured background; the truth is the
   patch's pixel mask; the zoo CNN, which has no pooling across positions, stays at chance on
   ``gt-shapes``), trained with and without FPA (:class:`calix.train.FPA`). The explained images
   are fresh draws of the same generator, beyond the training stream. Every image explainer
   explains the predicted class; localisation is the relevance mass accuracy of |map|
   (:func:`calix.metrics.localization.relevance_mass_accuracy`), whose chance level is the
   mask's share of the image; the model-only metrics are the deletion AUC (zero fill) and
   ROAD's MoRF AUC (:func:`calix.metrics.removal.road`). A check replaces the object by the
   class-independent background (``null_images``) and an equal-area background square, to
   show the model decides by the object.

Degenerate maps (constant, NaN) are counted and left out of every aggregate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from calix import zoo
from calix._progress import progress_bar
from calix.calibrate import TemperatureScaling, calibrated, fit_calibrator
from calix.explain import (
    LIME,
    RISE,
    GuidedBackprop,
    IntegratedGradients,
    KernelSHAP,
    Occlusion,
    Saliency,
    SmoothGrad,
)
from calix.metrics.agreement import feature_agreement
from calix.metrics.faithfulness import deletion_curve
from calix.metrics.localization import relevance_mass_accuracy
from calix.metrics.removal import road
from calix.perturb import Columns, Constant, Mean, PatchGrid, Perturbation
from calix.studies._base import StudyContext
from calix.studies._stats import ALPHA, degenerate_maps, majority, paired
from calix.train import FPA

__all__ = ["run", "Config"]

CALIBRATIONS = ("none", "temperature", "recalx")
#: what the claims' ``paper`` field says: no paper makes them
OWN = ("calix's own claim (this study reproduces no paper); the threshold or rule in its text "
       "is calix's choice")
GRADIENT = ("Saliency", "IG", "SmoothGrad", "GuidedBackprop")


@dataclass(frozen=True, kw_only=True)
class Config:
    """The sizes and settings of one run (``config`` in ``results.json``).

    Parameters
    ----------
    tabular_data, image_data : the generated table and image set.
    seed : seeds the models, the explainers, ReCalX and ROAD.
    n_rows, n_images : test rows and fresh images explained.
    cnn_epochs : training epochs of both CNNs.
    top_k : features of the top-k agreement with the truth.
    shap_samples, lime_samples : coalitions of the tabular KernelSHAP and LIME.
    ig_steps, sg_samples, rise_masks, image_shap_samples : Integrated Gradients' steps,
        SmoothGrad's noisy copies, RISE's masks and the image KernelSHAP's coalitions.
    patch, occlusion_patch : patch sides of the image features (KernelSHAP, ReCalX) and of
        occlusion.
    deletion_steps, road_fractions : steps of the deletion curve and ROAD's removed shares.
    recalx_bins, recalx_inputs : ReCalX's level bins and validation inputs.
    alpha : significance level of every one-sided test.
    """

    tabular_data: str = "gt-logistic"
    image_data: str = "gt-textures"
    seed: int = 0
    n_rows: int
    n_images: int
    cnn_epochs: int
    top_k: int = 3
    shap_samples: int
    lime_samples: int
    ig_steps: int
    sg_samples: int
    rise_masks: int
    image_shap_samples: int
    patch: int = 8
    occlusion_patch: int = 8
    deletion_steps: int
    road_fractions: tuple[float, ...]
    recalx_bins: int = 5
    recalx_inputs: int
    alpha: float = ALPHA

    @classmethod
    def quick(cls, seed: int = 0) -> Config:
        """40 rows, 24 images, 10 CNN epochs, smaller explainer budgets, five ROAD shares."""
        return cls(seed=seed, n_rows=40, n_images=24, cnn_epochs=10, shap_samples=200,
                   lime_samples=200, ig_steps=16, sg_samples=10, rise_masks=500,
                   image_shap_samples=300, deletion_steps=20,
                   road_fractions=(0.05, 0.1, 0.2, 0.3, 0.5), recalx_inputs=100)

    @classmethod
    def full(cls, seed: int = 0) -> Config:
        """200 rows, 100 images, 30 CNN epochs, larger explainer budgets, nine ROAD shares."""
        return cls(seed=seed, n_rows=200, n_images=100, cnn_epochs=30, shap_samples=500,
                   lime_samples=500, ig_steps=50, sg_samples=50, rise_masks=2000,
                   image_shap_samples=1000, deletion_steps=50,
                   road_fractions=(0.01, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9),
                   recalx_inputs=300)


def run(ctx: StudyContext) -> None:
    """Run the ground-truth study into ``ctx`` (see the module docstring)."""
    cfg = ctx.use_config(Config)
    _tables(ctx, cfg)
    _images(ctx, cfg)


# ============================================================================== tables
def _spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from calix._stats import spearman

    return np.asarray(spearman(a, b, constant=np.nan), dtype=np.float64)


def _tabular_explainers(model: Any, ds: Any, cfg: Config) -> dict[str, Any]:
    mean = Mean().fit(ds.X_train)
    return {
        "Saliency": Saliency(model),
        "IG": IntegratedGradients(model, baselines=torch.as_tensor(ds.X_train.mean(0)),
                                  n_steps=cfg.ig_steps),
        "KernelSHAP": KernelSHAP(model, fill=mean, n_samples=cfg.shap_samples,
                                 seed=cfg.seed),
        "LIME": LIME(model, fill=mean, n_samples=cfg.lime_samples, seed=cfg.seed),
        "Occlusion": Occlusion(model, fill=mean),
    }


def _tables(ctx: StudyContext, cfg: Config) -> None:
    trained = zoo.train("mlp", cfg.tabular_data, seed=ctx.seed, progress=ctx.progress)
    ds, base = trained.dataset, trained.wrap()
    n = min(cfg.n_rows, len(ds.X_test))
    x = torch.as_tensor(ds.X_test[:n])
    truth = np.asarray(ds.extra["attributions"]["test"][:n], dtype=np.float64)
    models = _calibrated_models(base, ds, Perturbation(Columns(), Mean().fit(ds.X_train)), cfg)
    ctx.table("tabular_calibrators", _calibrator_rows("tables", models))
    rows, per = [], {}
    for cal, model in models.items():
        for name, exp in _tabular_explainers(model, ds, cfg).items():
            e = exp.explain(x, target=1)
            a = np.asarray(e.feature_values if e.feature_values is not None else e.values,
                           dtype=np.float64).reshape(n, -1)
            bad = degenerate_maps(a)
            rho = _spearman_rows(np.abs(a), np.abs(truth))
            agree = feature_agreement(a, truth, k=cfg.top_k)
            rho, agree = np.where(bad, np.nan, rho), np.where(bad, np.nan, agree)
            per[(cal, name)] = rho
            rows.append({"calibration": cal, "explainer": name,
                         "spearman_abs_truth": float(np.nanmean(rho)),
                         f"top{cfg.top_k}_feature_agreement": float(np.nanmean(agree)),
                         "degenerate": int(bad.sum()), "queries": e.n_queries})
    ctx.table("tabular_agreement", rows)
    acc = float((base.predict(ds.X_test) == ds.y_test).mean())
    ctx.table("tabular_model", [{"data": cfg.tabular_data, "test_accuracy": acc}])

    uncal = {r["explainer"]: r["spearman_abs_truth"] for r in rows if r["calibration"] == "none"}
    best = max(uncal, key=uncal.get)
    ctx.claim(
        "On the logistic table, KernelSHAP recovers the true attribution ranking: its mean "
        "per-row Spearman correlation of |attribution| with |truth| is at least 0.8 (calix's "
        "threshold) and the highest of the five tabular explainers (uncalibrated model; the "
        "explainers explain class 1's probability while the truth is on the log-odds scale, "
        "so only the rankings are compared)",
        uncal["KernelSHAP"] >= 0.8 and best == "KernelSHAP",
        {"spearman_abs_truth": uncal, "best": best, "test_accuracy": acc},
        kind="extension", paper=OWN,
        sensitivity={"threshold 0.7": uncal["KernelSHAP"] >= 0.7 and best == "KernelSHAP",
                     "threshold 0.8 alone (not necessarily the best)":
                         uncal["KernelSHAP"] >= 0.8})
    _calibration_claim(
        ctx, {(c, m): (per[(c, m)], per[("none", m)]) for c in CALIBRATIONS[1:] for m in uncal},
        "Calibration does not move tabular explanations away from the truth: for no "
        "calibrator x explainer is the per-row Spearman correlation with the truth "
        f"significantly lower than uncalibrated (one-sided paired t-test, p < {ALPHA})")


def _calibration_claim(ctx: StudyContext, pairs: dict[tuple[str, str], tuple[Any, Any]],
                       text: str) -> None:
    """The claim that no calibrator x explainer is significantly worse than uncalibrated:
    ``pairs`` maps (calibrator, explainer) to (calibrated scores, uncalibrated scores)."""
    tests = {key: paired(a, b, alternative="less") for key, (a, b) in pairs.items()}
    worse = sorted(f"{c}/{m}" for (c, m), t in tests.items() if t["significant"])
    ctx.claim(
        text, not worse,
        {"significantly_lower": worse,
         "tests": {f"{c}/{m}": {"mean_diff": t["mean_diff"], "p": t["p"]}
                   for (c, m), t in tests.items()}},
        kind="extension", paper=OWN,
        sensitivity={"Wilcoxon signed-rank test instead of t": not any(
            t["significant_wilcoxon"] for t in tests.values())})


def _calibrated_models(base: Any, ds: Any, perturbation: Perturbation, cfg: Config
                       ) -> dict[str, Any]:
    z_val = base.forward(ds.X_val, grad=False)
    ts = TemperatureScaling().fit(z_val, ds.y_val)
    rx = fit_calibrator("recalx", base, ds.X_val, ds.y_val, perturbation=perturbation,
                        n_bins=cfg.recalx_bins, n_samples=cfg.recalx_inputs,
                        seed=cfg.seed)
    return {"none": base, "temperature": calibrated(base, ts), "recalx": calibrated(base, rx)}


def _calibrator_rows(part: str, models: dict[str, Any]) -> list[dict[str, Any]]:
    """The fitted temperatures of one part (a temperature of 1 with every validation
    prediction correct: temperature scaling has nothing to fit, see its warning)."""
    ts, rx = models["temperature"].calibrator, models["recalx"].calibrator
    return [{"part": part, "calibrator": "temperature", "temperature": ts.temperature_},
            *({"part": part, "calibrator": "recalx", "level_bin": b, "temperature": float(t)}
              for b, t in enumerate(rx.temperatures_.tolist()))]


# ============================================================================== images
def _image_explainers(model: Any, cfg: Config) -> dict[str, Any]:
    zero = Constant(0.0)
    return {
        "Saliency": Saliency(model, reduce="abs_sum"),
        "IG": IntegratedGradients(model, n_steps=cfg.ig_steps, reduce="sum"),
        "SmoothGrad": SmoothGrad(model, n_samples=cfg.sg_samples, reduce="abs_sum",
                                 seed=cfg.seed),
        "GuidedBackprop": GuidedBackprop(model, reduce="abs_sum"),
        "Occlusion": Occlusion(model, features=PatchGrid(cfg.occlusion_patch), fill=zero),
        "RISE": RISE(model, n_masks=cfg.rise_masks, seed=cfg.seed),
        "KernelSHAP": KernelSHAP(model, features=PatchGrid(cfg.patch), fill=zero,
                                 n_samples=cfg.image_shap_samples, seed=cfg.seed),
    }


def _images(ctx: StudyContext, cfg: Config) -> None:
    variants = {}
    for fpa in (False, True):
        aug = FPA(seed=ctx.seed) if fpa else None
        variants["fpa" if fpa else "standard"] = zoo.train(
            "cnn", cfg.image_data, seed=ctx.seed, epochs=cfg.cnn_epochs, augment=aug,
            augment_config=aug.config() if aug else None, progress=ctx.progress)
    ds = variants["standard"].dataset
    gen = ds.extra["generator"]
    batch = gen.generate(cfg.n_images, start=10**6 + 1000 * ctx.seed, with_null=True)
    x, masks = batch.images, batch.masks.numpy()
    area = masks.reshape(len(masks), -1).mean(1)

    base = variants["standard"].wrap()
    _decides_by_object(ctx, base, batch)
    cals = _calibrated_models(base, ds, Perturbation(PatchGrid(cfg.patch), Constant(0.0)),
                              cfg)
    ctx.table("image_calibrators", _calibrator_rows("images", cals))
    models = {("standard", c): m for c, m in cals.items()}
    models[("fpa", "none")] = variants["fpa"].wrap()
    with torch.no_grad():
        ctx.table("image_models", [
            {"model": v, "accuracy_fresh_images": float(
                (tr.wrap().forward(x).argmax(1) == batch.labels).float().mean())}
            for v, tr in variants.items()])

    rows, loc, dele, roads, shown = [], {}, {}, {}, {}
    jobs = [(v, c, name) for (v, c) in models for name in _image_explainers(base, cfg)]
    for v, c, name in progress_bar(jobs, total=len(jobs), enabled=ctx.progress,
                                   description="ground-truth: image explainers"):
        model = models[(v, c)]
        e = _image_explainers(model, cfg)[name].explain(x)
        m = np.abs(np.asarray(e.values, dtype=np.float64)).sum(1)  # (n, H, W)
        bad = degenerate_maps(m)
        rma = np.where(bad, np.nan, relevance_mass_accuracy(m, masks))
        loc[(v, c, name)] = rma
        row = {"model": v, "calibration": c, "explainer": name,
               "relevance_mass_accuracy": float(np.nanmean(rma)),
               "chance": float(area.mean()), "degenerate": int(bad.sum())}
        if c == "none" and v == "standard":
            shown[name] = m[:3]
            maps = m[:, None]
            d = deletion_curve(model, x, maps, steps=cfg.deletion_steps).auc
            r = road(model, x, maps, fractions=cfg.road_fractions, seed=cfg.seed).auc
            dele[name] = np.where(bad, np.nan, d)
            roads[name] = np.where(bad, np.nan, r)
            row.update(deletion_auc=float(np.nanmean(dele[name])),
                       road_morf_auc=float(np.nanmean(roads[name])))
        rows.append(row)
    ctx.table("localization", rows)
    ctx.figure("maps", _plot_maps(x[:3].numpy(), masks[:3], shown),
               caption="Three fresh images, the deciding patch's outline (white) and |map| of "
                       "each explainer (uncalibrated standard CNN)")
    ctx.arrays("localization", **{f"{v}_{c}_{n}": a for (v, c, n), a in loc.items()},
               area=area)
    _image_claims(ctx, cfg, loc, dele, roads, area)


def _plot_maps(images: np.ndarray, masks: np.ndarray, maps: dict[str, np.ndarray]) -> Any:
    from calix.plot import subplots

    names = list(maps)
    fig, axes = subplots(len(images), len(names) + 1, squeeze=False,
                         figsize=(1.6 * (len(names) + 1), 1.7 * len(images)))
    for i in range(len(images)):
        for j, (title, img) in enumerate([("image", images[i].mean(0)),
                                          *((n, maps[n][i]) for n in names)]):
            ax = axes[i, j]
            ax.imshow(img, cmap="gray" if j == 0 else "magma")
            ax.contour(masks[i], levels=[0.5], colors="white", linewidths=0.8)
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def _decides_by_object(ctx: StudyContext, model: Any, batch: Any) -> None:
    """Replace the object, or an equal-area background square, by the null image."""
    x, null, masks = batch.images, batch.null_images, batch.masks
    with torch.no_grad():
        p = torch.softmax(model.forward(x), -1)
        y = batch.labels
        p_clean = p[torch.arange(len(y)), y]
        gone = torch.where(masks[:, None], null, x)
        p_obj = torch.softmax(model.forward(gone), -1)[torch.arange(len(y)), y]
        # the same square shifted to the opposite corner region (background pixels only)
        h = x.shape[-1]
        shifted = torch.roll(masks, shifts=(h // 2, h // 2), dims=(1, 2)) & ~masks
        bg = torch.where(shifted[:, None], null, x)
        p_bg = torch.softmax(model.forward(bg), -1)[torch.arange(len(y)), y]
    acc = float((p.argmax(1) == y).float().mean())
    chance = 1.0 / p.shape[1]
    stats = {"accuracy_fresh_images": acc, "p_true_clean": float(p_clean.mean()),
             "p_true_object_removed": float(p_obj.mean()),
             "p_true_background_removed": float(p_bg.mean()), "chance": chance}
    ctx.table("object_removal", [stats])
    ctx.claim(
        "The CNN decides by the object: on fresh generated images, replacing the deciding "
        "object by class-independent background brings the true class's mean probability "
        "within 0.15 of chance, while replacing a background region of equal area keeps it "
        "within 0.1 of the clean images' (a check of the data and the model)",
        abs(stats["p_true_object_removed"] - chance) <= 0.15
        and abs(stats["p_true_clean"] - stats["p_true_background_removed"]) <= 0.1,
        stats, kind="check",
        paper="a check of the generated data and the trained model, which every image claim "
              "rests on")


def _image_claims(ctx: StudyContext, cfg: Config, loc: dict, dele: dict, roads: dict,
                  area: np.ndarray) -> None:
    names = list(dele)
    above = {n: paired(loc[("standard", "none", n)], area, alternative="greater")
             for n in names}
    ctx.claim(
        "Every image explainer localises the deciding object better than chance: its relevance "
        "mass accuracy is above the object's share of the image (one-sided paired t-test "
        f"over images, p < {ALPHA}), for every explainer (uncalibrated standard CNN)",
        all(t["significant"] for t in above.values()),
        {n: {"mean_diff": t["mean_diff"], "p": t["p"], "n": t["n"]} for n, t in above.items()},
        kind="extension", paper=OWN,
        sensitivity={"a strict majority of explainers": majority(
            t["significant"] for t in above.values())})
    _calibration_claim(
        ctx, {(c, n): (loc[("standard", c, n)], loc[("standard", "none", n)])
              for c in CALIBRATIONS[1:] for n in names},
        "Calibration does not move image explanations away from the object: for no "
        "calibrator x explainer is the relevance mass accuracy significantly lower than "
        f"uncalibrated (one-sided paired t-test over images, p < {ALPHA})")
    fpa = {n: paired(loc[("fpa", "none", n)], loc[("standard", "none", n)],
                     alternative="greater") for n in GRADIENT}
    ctx.claim(
        "FPA training moves gradient maps onto the object: the relevance mass accuracy of a "
        "strict majority of the four gradient explainers is significantly higher for the "
        f"FPA-trained CNN than for the standard one (one-sided paired t-test, p < {ALPHA})",
        majority(t["significant"] for t in fpa.values()),
        {n: {"mean_diff": t["mean_diff"], "p": t["p"]} for n, t in fpa.items()},
        kind="extension", paper=OWN,
        sensitivity={"any of the four": any(t["significant"] for t in fpa.values())})
    from scipy.stats import spearmanr

    truth_score = np.array([np.nanmean(loc[("standard", "none", n)]) for n in names])
    del_score = -np.array([np.nanmean(dele[n]) for n in names])  # lower deletion AUC: better
    road_score = -np.array([np.nanmean(roads[n]) for n in names])
    rho_del = float(spearmanr(truth_score, del_score).statistic)
    rho_road = float(spearmanr(truth_score, road_score).statistic)
    ctx.claim(
        "The model-only metrics rank the explainers as the ground truth does: the Spearman "
        "correlation, over explainers, between the ranking by relevance mass accuracy and the "
        "ranking by deletion AUC is positive, and so is the one by ROAD's MoRF AUC",
        rho_del > 0 and rho_road > 0,
        {"explainers": names, "spearman_deletion": rho_del, "spearman_road": rho_road,
         "relevance_mass_accuracy": dict(zip(names, truth_score.tolist(), strict=True)),
         "deletion_auc": dict(zip(names, (-del_score).tolist(), strict=True)),
         "road_morf_auc": dict(zip(names, (-road_score).tolist(), strict=True))},
        kind="extension", paper=OWN,
        sensitivity={"correlation at least 0.5 for both": rho_del >= 0.5 and rho_road >= 0.5,
                     "deletion alone": rho_del > 0})
