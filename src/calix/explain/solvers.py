"""Weighted least-squares solvers shared by calix's surrogate and Shapley estimators.

Every solver is batched over inputs (leading dimension n), runs in float64 on the device of the
targets ``y`` and solves its normal equations by Cholesky (:func:`spd_solve`). Padding columns
(inputs with fewer features than the batch's widest, see :func:`real_columns`) get coefficient
exactly 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["spd_solve", "real_columns", "weighted_ridge", "efficiency_constrained_wls"]


def spd_solve(a: Tensor, b: Tensor, fix: str | None = None) -> Tensor:
    """Solve batched symmetric positive-(semi)definite systems ``a x = b`` (float64).

    Cholesky first (the cheaper factorisation, and batched LU failed inside MKL's DLASWP on
    some ridge systems with two threads); systems whose factorisation fails -- rank-deficient
    designs -- are solved by LU instead, or, with ``fix`` given, raise a ValueError that ends
    with ``fix``.
    """
    factor, info = torch.linalg.cholesky_ex(a)
    bad = info != 0
    if not bool(bad.any()):
        return torch.cholesky_solve(b, factor)
    if fix is not None:
        raise ValueError(f"normal equations that are not positive definite; {fix}")
    out = torch.cholesky_solve(b, torch.where(bad[..., None, None], torch.eye(
        a.shape[-1], dtype=a.dtype, device=a.device), factor))
    out[bad] = torch.linalg.solve(a[bad], b[bad])
    return out


def real_columns(n_features: Tensor, d: int, device: torch.device | str | None = None
                 ) -> Tensor | None:
    """Which of d mask columns are real features of each input, (n, d) bool; None when every
    input has all d (no padding columns).

    ``n_features`` (n,) is :attr:`calix.perturb.Segmentation.n_features`.
    """
    nf = torch.as_tensor(n_features).to(device)
    if bool((nf == d).all()):
        return None
    return torch.arange(d, device=device) < nf[:, None]


def weighted_ridge(z: Tensor, y: Tensor, w: Tensor, alpha: float, *,
                   valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Batched weighted ridge regression with an unpenalised intercept.

    Parameters
    ----------
    z : Tensor of shape (n, m, d)
    y : Tensor of shape (n, m)
    w : Tensor of shape (n, m) or (m,) -- non-negative weights.
    alpha : float -- L2 penalty on the coefficients (not the intercept), as scikit-learn's Ridge.
    valid : Tensor of shape (n, d), bool, or None -- real columns (:func:`real_columns`); the
        others are left out of the fit and get coefficient exactly 0.

    The fit runs in float64 on ``y``'s device (``z`` and ``w`` are moved there).

    Returns
    -------
    coef : Tensor of shape (n, d)
    intercept : Tensor of shape (n,)
    """
    y = y.double()
    z, w = z.to(y.device, torch.float64), w.to(y.device, torch.float64).expand_as(y)
    wsum = w.sum(1, keepdim=True)
    zm = (w[..., None] * z).sum(1) / wsum  # (n, d)
    ym = (w * y).sum(1) / wsum[:, 0]
    zc, yc = z - zm[:, None], y - ym[:, None]
    if valid is not None:
        zc = zc * valid.to(zc.device)[:, None, :]
    a = zc.transpose(1, 2) @ (w[..., None] * zc)
    a = a + alpha * torch.eye(z.shape[-1], dtype=a.dtype, device=a.device)
    if valid is not None:  # a padding column's row is e_j: its coefficient solves to 0
        a = a + torch.diag_embed((~valid.to(a.device)).to(a.dtype))
    b = zc.transpose(1, 2) @ (w * yc)[..., None]
    coef = spd_solve(a, b)[..., 0]
    return coef, ym - (zm * coef).sum(1)


def efficiency_constrained_wls(z: Tensor, y: Tensor, w: Tensor, total: Tensor, *,
                               valid: Tensor | None = None, fix: str | None = None) -> Tensor:
    """KernelSHAP's estimator: argmin_φ Σ w (y − z·φ)² subject to Σφ = ``total``, batched.

    The constraint is eliminated (φ_d = total − Σ_{j<d} φ_j) and the remaining unconstrained
    weighted least squares, with a 1e-10 ridge, solved by :func:`spd_solve` (``fix``: the
    advice of its error for a singular system; None falls back to LU).

    Parameters
    ----------
    z : Tensor of shape (n, m, d) -- coalitions (bool or float) or any design whose
        coefficients must sum to ``total`` (polynomial terms, for instance).
    y : Tensor of shape (n, m) -- v(S) − v(∅).
    w : Tensor of shape (n, m) or (m,) -- regression weights.
    total : Tensor of shape (n,) -- v(full) − v(∅). All are moved to ``y``'s device.
    valid : Tensor of shape (n, d), bool, or None -- real columns (:func:`real_columns`):
        padding columns get φ = 0 exactly and the constraint holds on the real ones (the last
        real column is the eliminated one).

    Returns
    -------
    Tensor of shape (n, d), float64.
    """
    y = y.double()
    z, total = z.to(y.device, torch.float64), total.to(y.device, torch.float64)
    w = w.to(y.device, torch.float64).expand_as(y)
    if valid is not None:
        return _constrained_wls_padded(z, y, w, total, valid.to(y.device), fix)
    zr = z[..., :-1] - z[..., -1:]
    yr = y - z[..., -1] * total[:, None]
    a = zr.transpose(1, 2) @ (w[..., None] * zr)
    a = a + 1e-10 * torch.eye(z.shape[-1] - 1, dtype=a.dtype, device=a.device)
    head = spd_solve(a, zr.transpose(1, 2) @ (w * yr)[..., None], fix)[..., 0]
    return torch.cat([head, (total - head.sum(1))[:, None]], dim=1)


def _constrained_wls_padded(z: Tensor, y: Tensor, w: Tensor, total: Tensor, valid: Tensor,
                            fix: str | None) -> Tensor:
    """:func:`efficiency_constrained_wls` with padding columns: each input eliminates its own
    last real column; the free columns are its other real ones."""
    n, _, d = z.shape
    last = valid.sum(1) - 1  # (n,)
    cols = torch.arange(d, device=z.device)
    free = valid & (cols != last[:, None])  # (n, d)
    z_last = z.gather(2, last.view(n, 1, 1).expand(n, z.shape[1], 1))  # (n, m, 1)
    zr = (z - z_last) * free[:, None, :].to(z.dtype)
    yr = y - z_last[..., 0] * total[:, None]
    a = zr.transpose(1, 2) @ (w[..., None] * zr)
    a = a + 1e-10 * torch.eye(d, dtype=a.dtype, device=a.device)
    a = a + torch.diag_embed((~free).to(a.dtype))  # e_j rows: φ_j = 0 for padding and `last`
    head = spd_solve(a, zr.transpose(1, 2) @ (w * yr)[..., None], fix)[..., 0]
    return head.scatter(1, last[:, None], (total - head.sum(1))[:, None])
