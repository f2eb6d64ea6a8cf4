"""lime's tabular explainer (``lime.lime_tabular.LimeTabularExplainer``) on calix's model path.

calix's :class:`~calix.explain.LIME` removes features to a fill (LIME's image sampler).
:class:`LimeTabular` instead follows the ``lime`` package's sampler for tables: bins or
Gaussian draws fitted on training data, a binary "same bin as the instance" representation,
distances on that representation and a kernel-weighted ridge surrogate. All inputs' samples
go through the model in one batched call, and all surrogates are solved at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.special import ndtr
from torch import Tensor

from calix._validation import check_choice
from calix.explain.base import Output, Reduce, Stochastic, _Attribution, column_names
from calix.explain.surrogate import weighted_ridge
from calix.models import as_tensor

__all__ = ["LimeTabular"]

#: Percentiles of the training data that bound the bins of each discretizer.
_PERCENTILES = {"quartile": (25.0, 50.0, 75.0), "decile": tuple(10.0 * k for k in range(1, 10))}
#: lime adds this to every bin's standard deviation (so one-value bins keep a positive scale).
_STD_EPS = 1e-11
#: Samples x features generated (and regressed) per block of inputs, to bound memory.
_BLOCK_ELEMENTS = 1 << 22


class LimeTabular(Stochastic):
    """LIME for tables with the semantics of lime's ``LimeTabularExplainer``.

    LIME (Ribeiro, Singh & Guestrin 2016, "Why should I trust you?", KDD) as implemented for
    tables by the ``lime`` package (https://github.com/marcotcr/lime, ``lime_tabular.py``,
    ``discretize.py``, ``lime_base.py``), written again here vectorised over samples,
    features and inputs in torch.

    Sampling (``n_samples`` rows per input, the first being the input itself):

    - ``discretize_continuous=True`` (default): every continuous feature is cut into bins at
      the training data's quartiles (``discretizer="quartile"``) or deciles (``"decile"``);
      a sample draws a bin from the training bin frequencies and a value in it from a normal
      with the bin's training mean and standard deviation truncated to the bin (its lower
      edge is the training minimum for the first bin, its upper edge the training maximum
      for the last). The interpretable feature is 1 where the sample lies in the input's bin.
    - ``discretize_continuous=False``: continuous features are drawn from a normal with the
      training standard deviation around the training mean (or around the input with
      ``sample_around_instance=True``); the interpretable feature is the standardised value
      (x − mean) / std.
    - categorical features (``categorical_features``, integer codes) draw a value from the
      training frequencies; the interpretable feature is 1 where it equals the input's value.

    Weights π = sqrt(exp(−D² / w²)) with D the euclidean distance of each sample's
    interpretable row to the input's, w = ``kernel_width`` (default 0.75·sqrt(d)). The
    surrogate is a weighted ridge (``alpha``, lime: 1) with an unpenalised intercept on the
    interpretable rows, fitted to the explained class's probability (``output``); its
    coefficients for all d features are the attributions (lime's ``num_features=d``).

    One deliberate difference: where a bin holds a single value (e.g. a first quartile equal
    to the minimum), lime gives samples in it the bin's z-score (0) instead of its value;
    here they take the value. Targets default to the predicted class (lime's default is class 1).

    Parameters
    ----------
    model : calix Model, torch module, scikit-learn estimator or callable
    training_data : array-like, tensor or DataFrame of shape (n_train, d)
        Data the bins, frequencies, means and standard deviations are fitted on. A
        DataFrame's columns name the features.
    categorical_features : sequence of int (or column names of a DataFrame) or None
        Columns holding category codes; None means every column is continuous.
    feature_names : sequence of d str or None
        Names of the features (default: the DataFrame's columns, the names of the explained
        DataFrame or the model's ``feature_names_in_``, else ``x0 .. x{d-1}``).
    discretize_continuous : bool
    discretizer : {"quartile", "decile"}
    sample_around_instance : bool
        Without discretization, centre the normal draws on the input instead of the mean.
    kernel_width : float or None
        Width w of the exponential kernel; None means 0.75·sqrt(d).
    n_samples : int or None
        Samples per input, the input itself included (lime's ``num_samples``, default 5000);
        one model query each.
    alpha : float
        Ridge penalty of the surrogate.
    seed : int, numpy ``Generator``, torch ``Generator`` or None
        An int gives the same explanation on every call; a generator is advanced by each call;
        None draws fresh randomness.
    output, reduce : see :class:`~calix.explain.base.Explainer`
    budget : int or None
        Model queries per input, instead of ``n_samples`` (the same count).

    Attributes
    ----------
    feature_names_ : list of d str or None -- names from the DataFrame or ``feature_names``.
    categorical_features_ : tuple of int
    mean_, scale_ : ndarray of shape (d,) -- training mean and standard deviation (1 for
        constant columns), as lime's ``StandardScaler``.
    bin_edges_ : dict of int to ndarray -- the distinct percentiles bounding each discretized
        feature's bins (a value equal to an edge belongs to the lower bin).

    ``extra`` of the Explanation holds, each of shape (n,): ``intercept``, ``score`` (the
    surrogate's weighted R², lime's ``score``; also as ``r2`` like calix's other surrogates),
    ``local_pred`` (the surrogate at the input, lime's ``local_pred``) and ``prediction``
    (the explained score of the input itself).

    Example
    -------
    >>> exp = LimeTabular(clf, X_train, seed=0).explain(X_test[:5])  # doctest: +SKIP
    >>> exp.to_pandas()                                              # doctest: +SKIP
    """

    name = "lime_tabular"
    _budget_knob = "n_samples"

    def __init__(self, model: Any, training_data: Any, *,
                 categorical_features: Sequence[int | str] | None = None,
                 feature_names: Sequence[str] | None = None,
                 discretize_continuous: bool = True, discretizer: str = "quartile",
                 sample_around_instance: bool = False, kernel_width: float | None = None,
                 n_samples: int | None = None, alpha: float = 1.0, seed: Any = 0,
                 output: Output = "probability", reduce: Reduce = "none",
                 budget: int | None = None):
        super().__init__(model, output=output, reduce=reduce, seed=seed, budget=budget)
        check_choice(discretizer, _PERCENTILES, "discretizer", listed=tuple(_PERCENTILES))
        self._apply_budget(n_samples, 5000)
        n_samples = self.n_samples
        if isinstance(n_samples, bool) or not isinstance(n_samples, int | np.integer) \
                or n_samples < 2:
            raise ValueError(f"n_samples must be an integer >= 2 (the input and at least one "
                             f"perturbation), got {n_samples!r}")
        if kernel_width is not None and not (math.isfinite(kernel_width) and kernel_width > 0):
            raise ValueError(f"kernel_width must be a finite number > 0 or None, "
                             f"got {kernel_width!r}")
        if not (math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
        self.discretize_continuous = bool(discretize_continuous)
        self.discretizer = discretizer
        self.sample_around_instance = bool(sample_around_instance)
        self.kernel_width = None if kernel_width is None else float(kernel_width)
        self.n_samples, self.alpha = int(n_samples), float(alpha)
        self._fit(training_data, categorical_features, feature_names)
        shape = self.model.input_shape
        if shape is not None and shape != (self.n_features_in_,):
            raise ValueError(f"the model takes inputs of shape {shape}, but training_data has "
                             f"{self.n_features_in_} columns; LimeTabular explains tables "
                             "whose columns are the model's inputs")

    def params(self) -> dict[str, Any]:
        seed = self.seed if self.seed is None or isinstance(self.seed, int | np.integer) \
            else type(self.seed).__name__
        return {**super().params(), "n_samples": self.n_samples,
                "discretize_continuous": self.discretize_continuous,
                "discretizer": self.discretizer,
                "sample_around_instance": self.sample_around_instance,
                "categorical_features": list(self.categorical_features_),
                "kernel_width": self.kernel_width, "alpha": self.alpha, "seed": seed}

    # ---------------------------------------------------------------- fitting
    def _fit(self, training_data: Any, categorical: Any, feature_names: Any) -> None:
        names = column_names(training_data)
        data = _as_table(training_data)
        n_train, d = data.shape
        if feature_names is not None:
            feature_names = [str(s) for s in feature_names]
            if len(feature_names) != d:
                raise ValueError(f"feature_names has {len(feature_names)} names for the {d} "
                                 "columns of training_data")
            names = feature_names
        self.feature_names_: list[str] | None = names
        cat = _categorical_indices(categorical, d, names)
        self.categorical_features_: tuple[int, ...] = cat
        self.n_features_in_ = d

        self.mean_ = data.mean(0)
        constant = data.max(0) == data.min(0)
        self.scale_ = np.where(constant, 1.0, data.std(0))
        binned = [j for j in range(d) if j not in cat] if self.discretize_continuous else []
        gauss = [j for j in range(d) if j not in cat and not self.discretize_continuous]
        self._gauss = torch.as_tensor(gauss, dtype=torch.long)
        self._binned = torch.as_tensor(binned, dtype=torch.long)
        self._cat = torch.as_tensor(cat, dtype=torch.long)
        self._mean = torch.as_tensor(self.mean_)
        order = np.argsort(gauss + binned + list(cat))  # sampled blocks -> column order
        self._order = None if (order == np.arange(d)).all() else torch.as_tensor(order)
        self._scale = torch.as_tensor(self.scale_)

        # bins: edges (padded with +inf), frequencies, mean/std and bounds of each bin
        pct = _PERCENTILES[self.discretizer]
        self.bin_edges_ = {}
        qs = np.percentile(data[:, binned], pct, axis=0).T if binned else np.zeros((0, 0))
        edges = [np.unique(q) for q in qs]
        k = max((len(e) + 1 for e in edges), default=1)
        tab = {key: np.zeros((len(binned), k)) for key in ("freq", "mean", "lo", "hi")}
        tab["std"] = np.ones((len(binned), k))  # padding (never drawn) stays finite
        tab["edges"] = np.full((len(binned), max(k - 1, 1)), np.inf)
        for i, (j, e) in enumerate(zip(binned, edges, strict=True)):
            self.bin_edges_[j] = e
            col = data[:, j]
            b = np.searchsorted(e, col, side="left")
            count = np.bincount(b, minlength=len(e) + 1)
            mean = np.bincount(b, col, minlength=len(e) + 1) / np.maximum(count, 1)
            var = np.bincount(b, (col - mean[b]) ** 2, minlength=len(e) + 1) / np.maximum(count, 1)
            sl = slice(0, len(e) + 1)
            tab["edges"][i, : len(e)] = e
            tab["freq"][i, sl] = count / n_train
            tab["mean"][i, sl], tab["std"][i, sl] = mean, np.sqrt(var) + _STD_EPS
            tab["lo"][i, sl] = np.concatenate([[col.min()], e])
            tab["hi"][i, sl] = np.concatenate([e, [col.max()]])
        # per bin: mean, std, bounds and the normal CDF at the bounds, (nb * k, 6)
        a, b = (tab["lo"] - tab["mean"]) / tab["std"], (tab["hi"] - tab["mean"]) / tab["std"]
        self._bin_table = torch.as_tensor(np.stack(
            [tab["mean"], tab["std"], tab["lo"], tab["hi"], ndtr(a), ndtr(b)], -1).reshape(-1, 6))
        self._bin_cdf = _cdf(tab["freq"])
        self._bin_edges32 = torch.as_tensor(tab["edges"]).float().double()

        # categories: values (padded with NaN, which equals nothing) and frequencies
        levels = [np.unique(data[:, j], return_counts=True) for j in cat]
        k = max((len(v) for v, _ in levels), default=1)
        values, freq = np.full((len(cat), k), np.nan), np.zeros((len(cat), k))
        for i, (v, c) in enumerate(levels):
            values[i, : len(v)], freq[i, : len(v)] = v, c / n_train
        self._cat_values, self._cat_cdf = torch.as_tensor(values), _cdf(freq)

    # ---------------------------------------------------------------- sampling
    def sample(self, x: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """lime's neighbourhood of each input.

        Parameters
        ----------
        x : Tensor of shape (n, d) -- the inputs (float64 on the CPU).
        generator : torch.Generator

        Returns
        -------
        inverse : Tensor of shape (n, n_samples, d), float64 -- the samples in the data's
            units (what the model sees); ``inverse[:, 0] == x``.
        interpretable : Tensor of shape (n, n_samples, d), float64 -- their interpretable
            representation (bin / category indicators, standardised Gaussian features).
        """
        n, d = x.shape
        m = self.n_samples
        inv_parts, z_parts = [], []
        g, b, c = self._gauss, self._binned, self._cat
        if len(g):
            eps = torch.randn(n, m, len(g), generator=generator, dtype=torch.float64)
            mean, scale = self._mean[g], self._scale[g]
            centre = x[:, None, g] if self.sample_around_instance else mean
            v = eps * scale + centre
            v[:, 0] = x[:, g]
            inv_parts.append(v)
            z_parts.append((v - mean) / scale)
        if len(b):
            level = _draw_levels(self._bin_cdf, n, m, generator)  # (n, m, nb)
            # the input's bins, with edges rounded as the input was (float32), so an input
            # equal to an edge (a training row at a percentile) stays in the lower bin
            own = torch.searchsorted(self._bin_edges32, x[:, b].T.contiguous()).T  # (n, nb)
            u = torch.rand(n, m, len(b), generator=generator, dtype=torch.float64)
            flat = level + self._bin_cdf.shape[1] * torch.arange(len(b))
            mean, std, lo, hi, pa, pb = self._bin_table.index_select(0, flat.reshape(-1)) \
                .reshape(n, m, len(b), 6).unbind(-1)
            v = (mean + std * torch.special.ndtri(pa + u * (pb - pa))).clamp_(lo, hi)
            v = torch.where(hi > lo, v, lo)  # one-value bins: the value
            v[:, 0] = x[:, b]
            inv_parts.append(v)
            z_parts.append((level == own[:, None]).double())
        if len(c):
            level = _draw_levels(self._cat_cdf, n, m, generator)
            v = self._cat_values[torch.arange(len(c)), level]
            v[:, 0] = x[:, c]
            inv_parts.append(v)
            z_parts.append((v.float() == x[:, None, c].float()).double())
        inverse, z = torch.cat(inv_parts, -1), torch.cat(z_parts, -1)
        if len(b) or len(c):
            z[:, 0, len(g):] = 1.0  # the input is in its own bins (even unseen categories)
        if self._order is not None:
            inverse, z = inverse[..., self._order], z[..., self._order]
        return inverse, z

    def kernel(self, z: Tensor) -> Tensor:
        """Weights sqrt(exp(−D²/w²)) of interpretable rows z (..., m, d) -> (..., m): D is the
        euclidean distance of each row to the first one (the input's)."""
        w = self.kernel_width or 0.75 * math.sqrt(z.shape[-1])
        d2 = ((z - z[..., :1, :]) ** 2).sum(-1)
        return torch.sqrt(torch.exp(-d2 / w**2))

    # ---------------------------------------------------------------- explaining
    def _batch(self, x: Any) -> Tensor:
        """Rows (n, d) (one row (d,) gets a batch axis), checked against training_data's
        width before the model sees them."""
        d = self.n_features_in_
        t = as_tensor(x, name="x", device=self.model.device)
        if t.ndim == 1 and t.shape[0] == d:
            t = t[None]
        if t.ndim != 2 or t.shape[1] != d:
            raise ValueError(f"x must have shape (n, {d}) like training_data (or ({d},) for "
                             f"one row), got {tuple(t.shape)}")
        if len(t) == 0:
            raise ValueError("x has no inputs")
        return self.model.check_input(t)

    def _explain(self, x: Tensor, targets: Tensor) -> _Attribution:
        d = self.n_features_in_
        names = self._names(d)
        n, m = len(x), self.n_samples
        g = self._generator()
        x64 = x.detach().cpu().double()
        step = max(1, _BLOCK_ELEMENTS // (m * d))
        inverse, inter = [], []
        for s in range(0, n, step):
            inv, z = self.sample(x64[s : s + step], g)
            inverse.append(inv.float())
            inter.append(z.float())
        rows = torch.cat(inverse).reshape(n * m, d).to(self.model.device)
        del inverse
        with torch.no_grad():
            out = self.model.forward(rows, progress=self.progress, validate=False)
        y = self._score(out, targets.repeat_interleave(m)).reshape(n, m).double()
        coef, icpt, r2, local = [], [], [], []
        for s, z in zip(range(0, n, step), inter, strict=True):
            z = z.to(y.device, torch.float64)
            ys = y[s : s + step]
            w = self.kernel(z)
            cf, ic = weighted_ridge(z, ys, w, self.alpha)
            pred = (z @ cf[..., None])[..., 0] + ic[:, None]
            coef.append(cf)
            icpt.append(ic)
            r2.append(_weighted_r2(ys, pred, w))
            local.append(pred[:, 0])
        fv = torch.cat(coef).cpu().numpy()
        r2_ = torch.cat(r2).cpu().numpy()
        return _Attribution(
            values=fv.copy(), feature_values=fv, feature_names=names,
            extra={"intercept": torch.cat(icpt).cpu().numpy(), "score": r2_, "r2": r2_.copy(),
                   "local_pred": torch.cat(local).cpu().numpy(),
                   "prediction": y[:, 0].cpu().numpy()})

    def _names(self, d: int) -> list[str]:
        seen = self._column_names
        if self.feature_names_ is not None:
            if seen is not None and list(seen) != list(self.feature_names_):
                raise ValueError(
                    f"the columns of x (or the model's feature_names_in_) {list(seen)[:5]}... "
                    f"differ from training_data's {self.feature_names_[:5]}...; pass the "
                    "columns in training_data's order")
            return list(self.feature_names_)
        if seen is not None:
            return list(seen)
        return [f"x{j}" for j in range(d)]


# -------------------------------------------------------------------- helpers
def _as_table(training_data: Any) -> np.ndarray:
    """Training data as a finite float64 array of shape (n_train, d), or a clear error."""
    if isinstance(training_data, Tensor):
        training_data = training_data.detach().cpu().numpy()
    elif hasattr(training_data, "to_numpy") and not isinstance(training_data, np.ndarray):
        training_data = training_data.to_numpy()
    try:
        data = np.asarray(training_data, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"training_data must be numeric (encode categories as integer codes): "
                        f"{err}") from err
    if data.ndim != 2:
        raise ValueError(f"training_data must have shape (n_train, n_features), got shape "
                         f"{data.shape}")
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise ValueError(f"training_data must have at least one row and one column, got shape "
                         f"{data.shape}")
    bad = ~np.isfinite(data)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"training_data has {int(bad.sum())} NaN or infinite value(s), the "
                         f"first at row {r}, column {c}; impute or drop them first")
    return data


def _categorical_indices(categorical: Any, d: int, names: list[str] | None) -> tuple[int, ...]:
    if categorical is None:
        return ()
    if isinstance(categorical, str | int | np.integer):
        categorical = [categorical]
    out = []
    for c in categorical:
        if isinstance(c, str):
            if names is None or c not in names:
                raise ValueError(f"categorical feature {c!r} is not a column name of "
                                 f"training_data ({'no names' if names is None else names[:8]})")
            c = names.index(c)
        if isinstance(c, bool) or not isinstance(c, int | np.integer) or not 0 <= c < d:
            raise ValueError(f"categorical_features must be column indices in [0, {d}) or "
                             f"column names, got {c!r}")
        out.append(int(c))
    if len(set(out)) != len(out):
        raise ValueError(f"categorical_features lists a column twice: {out}")
    return tuple(sorted(out))


def _cdf(freq: np.ndarray) -> Tensor:
    """Cumulative frequencies (rows) with 1.0 from each row's last non-empty level on, so
    a uniform draw below 1 never lands on an empty level."""
    cdf = np.cumsum(freq, axis=1)
    for i, row in enumerate(freq):
        nz = np.flatnonzero(row)
        if len(nz):
            cdf[i, nz[-1]:] = 1.0
    return torch.as_tensor(cdf)


def _draw_levels(cdf: Tensor, n: int, m: int, generator: torch.Generator) -> Tensor:
    """Levels (n, m, f) drawn independently per feature from cumulative frequencies (f, k)."""
    f = cdf.shape[0]
    u = torch.rand(f, n * m, generator=generator, dtype=torch.float64)
    return torch.searchsorted(cdf, u, right=True).T.reshape(n, m, f)


def _weighted_r2(y: Tensor, pred: Tensor, w: Tensor) -> Tensor:
    """scikit-learn's weighted R² per row (1 for a perfect fit of a constant, else 0 there)."""
    ym = (w * y).sum(1, keepdim=True) / w.sum(1, keepdim=True)
    num = (w * (y - pred) ** 2).sum(1)
    den = (w * (y - ym) ** 2).sum(1)
    r2 = 1 - num / den.clamp_min(1e-300)
    return torch.where(den > 0, r2, (num == 0).double())
