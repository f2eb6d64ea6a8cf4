"""Dirichlet calibration with ODIR regularisation (Kull et al. 2019)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from calix.calibrate.base import Calibrator, check_logits_labels


class Dirichlet(Calibrator):
    """Dirichlet calibration: ``W ln q + b`` with q = softmax(z), ODIR regularisation.

    Loss: mean NLL + λ/(k(k−1)) Σ_{i≠j} w_ij² + μ/k Σ_j b_j², identity initialisation,
    fitted with L-BFGS in float64. When ``reg_lambda``/``reg_mu`` are None they are chosen by
    stratified k-fold cross-validation (validation NLL) on the log grid ``grid``.
    Unlike temperature scaling it can change the argmax.

    Parameters
    ----------
    reg_lambda, reg_mu : float or None
        ODIR strengths for off-diagonal weights and biases.
    grid : sequence of float
        Candidate values for both λ and μ when cross-validating.
    cv : int
        Number of folds.
    seed : int
        Seeds the fold split.

    Attributes
    ----------
    weight_ : Tensor of shape (k, k)
    bias_ : Tensor of shape (k,)
    reg_lambda_, reg_mu_ : float -- the strengths used.
    """

    def __init__(
        self,
        *,
        reg_lambda: float | None = None,
        reg_mu: float | None = None,
        grid: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0),
        cv: int = 3,
        seed: int = 0,
        eps: float = 1e-12,
    ) -> None:
        super().__init__()
        for nm, v in (("reg_lambda", reg_lambda), ("reg_mu", reg_mu)):
            if v is not None and v < 0:
                raise ValueError(f"{nm} must be >= 0, got {v}")
        if cv < 2:
            raise ValueError(f"cv must be >= 2, got {cv}")
        self.reg_lambda, self.reg_mu, self.grid, self.cv, self.seed, self.eps = (
            reg_lambda, reg_mu, tuple(grid), int(cv), int(seed), float(eps))
        self.register_buffer("weight_", torch.zeros(0, 0))
        self.register_buffer("bias_", torch.zeros(0))
        self.register_buffer("reg_", torch.zeros(2, dtype=torch.float64))

    @property
    def reg_lambda_(self) -> float:
        self._check_fitted()
        return float(self.reg_[0])

    @property
    def reg_mu_(self) -> float:
        self._check_fitted()
        return float(self.reg_[1])

    def _log_q(self, z: Tensor) -> Tensor:
        return torch.log_softmax(z, dim=-1).clamp_min(math.log(self.eps))

    @staticmethod
    def _loss(w: Tensor, b: Tensor, lq: Tensor, y: Tensor, lam: float, mu: float) -> Tensor:
        k = w.shape[0]
        off = w - torch.diag(torch.diag(w))
        nll = nn.functional.cross_entropy(lq @ w.T + b, y)
        return nll + lam / (k * (k - 1)) * (off**2).sum() + mu / k * (b**2).sum()

    def _fit_params(self, lq: Tensor, y: Tensor, lam: float, mu: float) -> tuple[Tensor, Tensor]:
        k = lq.shape[1]
        w = torch.eye(k, dtype=torch.float64, device=lq.device, requires_grad=True)
        b = torch.zeros(k, dtype=torch.float64, device=lq.device, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=500, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-9, tolerance_change=1e-12)

        def closure():
            opt.zero_grad()
            loss = self._loss(w, b, lq, y, lam, mu)
            loss.backward()
            return loss

        opt.step(closure)
        return w.detach(), b.detach()

    def fit(self, logits: Any, labels: Any, **kwargs: Any) -> Dirichlet:
        z, y = check_logits_labels(logits, labels)
        lq = self._log_q(z)
        if self.reg_lambda is not None and self.reg_mu is not None:
            lam, mu = self.reg_lambda, self.reg_mu
        else:
            lam, mu = self._cross_validate(lq, y)
        w, b = self._fit_params(lq, y, lam, mu)
        self._store("weight_", w.float())
        self._store("bias_", b.float())
        self.reg_.copy_(torch.tensor([float(lam), float(mu)], dtype=torch.float64,
                                     device=self.reg_.device))
        self._set_fitted()
        return self

    def _cross_validate(self, lq: Tensor, y: Tensor) -> tuple[float, float]:
        from sklearn.model_selection import KFold, StratifiedKFold

        counts = torch.bincount(y)
        counts = counts[counts > 0]
        splitter = (StratifiedKFold(self.cv, shuffle=True, random_state=self.seed)
                    if int(counts.min()) >= self.cv
                    else KFold(self.cv, shuffle=True, random_state=self.seed))
        folds = list(splitter.split(np.zeros(len(y)), y.numpy()))
        lams = self.grid if self.reg_lambda is None else (self.reg_lambda,)
        mus = self.grid if self.reg_mu is None else (self.reg_mu,)
        best, best_score = (lams[0], mus[0]), float("inf")
        for lam in lams:
            for mu in mus:
                score = 0.0
                for tr, va in folds:
                    w, b = self._fit_params(lq[tr], y[tr], lam, mu)
                    score += float(nn.functional.cross_entropy(lq[va] @ w.T + b, y[va],
                                                               reduction="sum"))
                if score < best_score:
                    best, best_score = (lam, mu), score
        return best

    def _calibrate(self, logits: Tensor, levels: Tensor | None) -> Tensor:
        k = self.weight_.shape[0]
        if logits.shape[1] != k:
            raise ValueError(f"logits must have the {k} classes this Dirichlet calibrator was "
                             f"fitted on, got shape {tuple(logits.shape)}")
        lq = self._log_q(logits)
        return lq @ self.weight_.to(lq).T + self.bias_.to(lq)


