"""The perturbation engine: one vectorised path from coalitions to perturbed model queries.

:class:`Perturbation` puts features (:mod:`calix.perturb.features`) and a fill
(:mod:`calix.perturb.fills`) together. :meth:`~Perturbation.apply` builds perturbed inputs
with their levels (:class:`Perturbed`), :meth:`~Perturbation.query` sends them through a
:class:`calix.models.Model` in bounded-memory chunks (:class:`QueryResult`), and
:meth:`~Perturbation.iter_chunks` is the chunked path both share. :class:`MaskBlocks` builds
large mask sets block by block.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from calix._random import make_generator
from calix.models import Model, as_tensor
from calix.perturb.features import Features, Segmentation
from calix.perturb.fills import Fill, Marginal, Noise
from calix.perturb.samplers import levels_of

__all__ = [
    "Perturbation", "Perturbed", "QueryResult", "MaskBlocks",
]


@dataclass(frozen=True)
class Perturbed:
    """Perturbed inputs and their levels.

    Attributes
    ----------
    inputs : Tensor of shape (n, m, *input_shape), or (m, *input_shape) for a single input
    levels : Tensor of shape (n, m), or (m,)
    """

    inputs: Tensor
    levels: Tensor


@dataclass(frozen=True)
class QueryResult:
    """Model outputs on perturbed inputs.

    Attributes
    ----------
    outputs : Tensor of shape (n, m, n_outputs), or (m, n_outputs) for a single input
        Logits (classifiers) or outputs (regressors). With ``average`` (see
        :meth:`Perturbation.query`), the outputs of the background-averaged model.
    levels : Tensor of shape (n, m), or (m,)
    n_queries : int
        Model evaluations spent.
    """

    outputs: Tensor
    levels: Tensor
    n_queries: int


class MaskBlocks:
    """Masks built block by block on demand, so that a large set (RISE's thousands of
    pixel masks) never exists at once.

    Parameters
    ----------
    m, d : int
        Number of masks and their width.
    make : callable ``make(b) -> Tensor`` of shape ``(rows, d)``
        Block ``b`` (masks ``b * block_size`` to ``(b + 1) * block_size``, the last block may
        be shorter); must be deterministic (e.g. seeded by ``b``), as blocks are rebuilt for
        every input and by every pass.
    block_size : int
    """

    def __init__(self, m: int, d: int, make: Any, *, block_size: int = 256):
        if m < 1 or d < 1 or block_size < 1:
            raise ValueError(f"m, d and block_size must be >= 1, got {m}, {d}, {block_size}")
        self.m, self.d, self.block_size = int(m), int(d), int(block_size)
        self._make = make
        self._cache: tuple[int, Tensor] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return (self.m, self.d)

    def block(self, b: int) -> Tensor:
        """Masks of block ``b``, shape ``(rows, d)`` (the last block built is kept)."""
        if self._cache is None or self._cache[0] != b:
            blk = self._make(b)
            rows = min(self.block_size, self.m - b * self.block_size)
            if tuple(blk.shape) != (rows, self.d):
                raise ValueError(f"mask block {b} has shape {tuple(blk.shape)}, "
                                 f"expected {(rows, self.d)}")
            self._cache = (b, blk)
        return self._cache[1]

    def rows(self, j0: int, j1: int, device: torch.device) -> Tensor:
        """Masks ``j0`` to ``j1`` (exclusive), on ``device``."""
        bs = self.block_size
        parts = [self.block(b)[max(j0 - b * bs, 0):j1 - b * bs]
                 for b in range(j0 // bs, (j1 - 1) // bs + 1)]
        out = parts[0] if len(parts) == 1 else torch.cat(parts)
        return out.to(device)

    def blocks(self, device: torch.device | None = None) -> Iterator[tuple[slice, Tensor]]:
        """``(columns, masks)`` for every block in order."""
        for b in range(math.ceil(self.m / self.block_size)):
            start = b * self.block_size
            blk = self.block(b)
            yield slice(start, start + len(blk)), blk if device is None else blk.to(device)


_VECTORISED_ELEMENTS = 1 << 22  # chunks of at most this many elements build in one gather
_APPLY_CHUNK = 8192
_AVERAGES = ("probability", "output")


class Perturbation:
    """Features + fill: builds perturbed inputs and queries a model on them in batches.

    Parameters
    ----------
    features : Features
    fill : Fill
    chunk_size : int or None
        Perturbed rows built at once. None (the default) builds exactly one model batch
        at a time (the model's ``batch_size``) in :meth:`query`, so the memory of perturbed
        rows is bounded by the batch, whatever the number of masks or inputs; ``batch_size``
        given to :func:`calix.wrap` is the one knob that bounds it.

    Notes
    -----
    ``x`` may be one input ``(*input_shape)`` or a batch ``(n, *input_shape)``. Results for a
    single input drop the leading ``n`` axis.
    """

    def __init__(self, features: Features, fill: Fill, *, chunk_size: int | None = None):
        if not isinstance(features, Features):
            raise TypeError(f"features must be a calix Features, got {type(features).__name__}")
        if not isinstance(fill, Fill):
            raise TypeError(f"fill must be a calix Fill, got {type(fill).__name__}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.features = features
        self.fill = fill
        self.chunk_size = None if chunk_size is None else int(chunk_size)

    # -------------------------------------------------------------- helpers
    def _batch(self, x: Any, device: torch.device | None = None) -> tuple[Tensor, bool]:
        t = as_tensor(x, name="x", device=device)
        nd = self.features.sample_ndim
        if t.ndim == nd:
            return t[None], True
        if t.ndim != nd + 1:
            raise ValueError(
                f"x must be one input with {nd} dimension(s) or a batch with {nd + 1}, "
                f"got shape {tuple(t.shape)}"
            )
        if len(t) == 0 or t[0].numel() == 0:
            raise ValueError(f"x is empty (shape {tuple(t.shape)})")
        return t, False

    def segment(self, x: Any) -> Segmentation:
        """Feature labels of ``x`` (one input or a batch)."""
        return self.features.segment(self._batch(x)[0])

    def n_features(self, x: Any) -> int:
        """Number of features d (the largest over a batch for superpixels)."""
        return self.segment(x).d

    def _masks(self, masks: Any, n: int, d: int, device: torch.device, dtype: torch.dtype
               ) -> Tensor | MaskBlocks:
        if isinstance(masks, MaskBlocks):
            if masks.d != d:
                raise ValueError(f"masks must have width {d} (the features of x), got {masks.d}")
            return masks
        try:
            mk = torch.as_tensor(masks, device=device)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"masks must be a boolean or numeric array: {exc}") from exc
        if mk.ndim == 2:
            mk = mk[None]
        if mk.ndim != 3 or mk.shape[0] not in (1, n) or mk.shape[-1] != d:
            raise ValueError(
                f"masks must have shape (m, {d}) or ({n}, m, {d}) for x of {n} input(s) with "
                f"{d} features, got {tuple(torch.as_tensor(masks).shape)}"
            )
        if mk.dtype != torch.bool:
            if mk.is_complex():
                raise TypeError("masks must be boolean or real numbers in [0, 1]")
            mk = mk.to(dtype)
            if not torch.isfinite(mk).all() or (mk < 0).any() or (mk > 1).any():
                raise ValueError("masks must be boolean or numbers in [0, 1] (1 keeps a feature)")
            if ((mk == 0) | (mk == 1)).all() and not mk.requires_grad:
                mk = mk.bool()
        return mk

    @staticmethod
    def _mask_count(masks: Any) -> int:
        if isinstance(masks, MaskBlocks):
            return masks.m
        shape = np.shape(masks) if not isinstance(masks, Tensor) else tuple(masks.shape)
        return int(shape[-2]) if len(shape) >= 2 else 0

    def _background(self, xb: Tensor) -> Tensor | None:
        """Background rows (B, numel) on x's device when the fill averages over them."""
        if not isinstance(self.fill, Marginal):
            return None
        return self.fill._checked_background(xb).to(xb.device).reshape(
            len(self.fill.background_), -1)

    # -------------------------------------------------------------- core
    def iter_chunks(
        self,
        x: Any,
        masks: Any,
        *,
        seed: int | torch.Generator | None = None,
        device: torch.device | str | None = None,
        chunk_size: int | None = None,
        expand_background: bool = False,
        reuse: bool = False,
    ) -> Iterator[tuple[slice, Tensor, Tensor]]:
        """Yield ``(rows, inputs, levels)`` chunks of the flattened ``n * m`` perturbations.

        ``rows`` is a slice into the row index ``i * m + j`` (input i, mask j); ``inputs`` has
        shape ``(c, *input_shape)`` and ``levels`` ``(c,)``, with c <= the chunk size. Each
        chunk is built on x's device from the input, its reference and one gather of the
        masks to elements; nothing of size n × m × input exists at once.

        With ``expand_background`` (a :class:`Marginal` fill) every perturbation is built
        once per background row: row index ``(i * m + j) * B + k`` takes background row k.
        With ``reuse``, every chunk is written into one buffer (a chunk is valid until the
        next is drawn: for consumers that use each chunk at once, such as :meth:`query`).
        """
        dev = torch.device(device) if device is not None else None
        xb, _ = self._batch(x, dev)
        dev = xb.device
        n = len(xb)
        seg = self.features.segment(xb)
        mk = self._masks(masks, n, seg.d, dev, xb.dtype)
        lazy = isinstance(mk, MaskBlocks)
        m = mk.m if lazy else mk.shape[1]
        size = int(chunk_size or self.chunk_size or _APPLY_CHUNK)
        g = make_generator(seed)
        bg = self._background(xb) if expand_background else None
        n_bg = 1 if bg is None else len(bg)
        stochastic = self.fill.stochastic and bg is None
        ref_flat = None if stochastic or bg is not None else (
            self.fill.reference(xb, generator=g).reshape(n, -1))
        flat = xb.reshape(n, -1)
        numel = flat.shape[1]
        lab_flat = seg.labels.reshape(n, -1)
        nf = seg.n_features.to(dev)
        shape = xb.shape[1:]
        total = n * m * n_bg

        def mask_rows(i: int, j0: int, j1: int) -> Tensor:
            if lazy:
                return mk.rows(j0, j1, dev)
            return mk[i if mk.shape[0] > 1 else 0, j0:j1]

        mk_flat, buffer = None, None
        # lerp(ref, x, 0/1) is exact unless x - ref overflows float32: with values that
        # large, the slower where() path is taken instead
        big = 1e37
        lerp_safe = bool(flat.abs().max() < big) and (
            ref_flat is None or bool(ref_flat.abs().max() < big)) and (
            bg is None or bool(bg.abs().max() < big)) and not (
            stochastic and isinstance(self.fill, Noise)
            and abs(self.fill.mean) + 40 * self.fill.std >= big)
        for start in range(0, total, size):
            stop = min(start + size, total)
            c = stop - start
            if (not lazy and seg.shared and bg is None and not stochastic
                    and c * max(numel, seg.d) <= _VECTORISED_ELEMENTS
                    and not mk.requires_grad):
                # small rows (tables, tiny images): one gather over the whole chunk
                # (index_select and gather, not advanced indexing: the latter is far slower
                # on CPU when its thread pool competes for cores)
                r = torch.arange(start, stop, device=dev)
                i = r // m
                if mk.shape[0] > 1:
                    if mk_flat is None:  # once: a copy only if the masks are an expanded view
                        mk_flat = mk.reshape(n * m, -1)
                    rows_mask = mk_flat[start:stop]
                else:
                    rows_mask = mk[0].index_select(0, r % m)
                keep = torch.gather(rows_mask, 1, lab_flat[0].expand(c, numel))
                xi, refi = flat.index_select(0, i), ref_flat.index_select(0, i)
                if keep.dtype == torch.bool:
                    out = torch.where(keep, xi, refi)
                else:  # the same blend as the block path, to the last bit
                    out = torch.lerp(refi, xi, keep)
                yield (slice(start, stop), out.reshape(c, *shape),
                       levels_of(rows_mask.detach(), nf[i]))
                continue
            grad = (not lazy and mk.requires_grad) or xb.requires_grad
            if grad or not lerp_safe:
                out = None
            elif reuse:  # one buffer for every batch: no fresh pages to fault in each time
                if buffer is None:
                    buffer = torch.empty((min(size, total), numel), dtype=xb.dtype, device=dev)
                out = buffer[:c]
            else:
                out = torch.empty((c, numel), dtype=xb.dtype, device=dev)
            pieces, lvls = [], []
            q0, q1 = start // n_bg, (stop - 1) // n_bg  # perturbation indices i * m + j
            for i in range(q0 // m, q1 // m + 1):
                # rows of input i inside this chunk, in the (expanded) row index
                a, b = max(start, i * m * n_bg), min(stop, (i + 1) * m * n_bg)
                j0, j1 = (a // n_bg) - i * m, ((b - 1) // n_bg) - i * m + 1
                rows_mask = mask_rows(i, j0, j1)  # (j1 - j0, d)
                lv = levels_of(rows_mask.detach(), nf[i])
                if bg is not None:
                    k = torch.arange(a, b, device=dev)
                    sel = (k // n_bg) - (i * m + j0)
                    rows_mask, lv = rows_mask.index_select(0, sel), lv.index_select(0, sel)
                    ref = bg.index_select(0, k % n_bg)
                elif stochastic:
                    ref = self.fill.reference(xb[i].expand(b - a, *shape),
                                              generator=g).reshape(b - a, -1)
                else:
                    ref = ref_flat[i][None]
                # one gather from features to elements (an expanded view of the labels: no
                # index tensor the size of the batch), then one lerp between the reference and
                # the input, in place: exact for 0/1 masks, the blend for float masks
                lab = lab_flat[0 if seg.shared else i]
                r = b - a
                xi = flat[i][None]
                if out is None:
                    keep = torch.gather(rows_mask, 1, lab.expand(r, numel))
                    if keep.dtype == torch.bool:
                        pieces.append(torch.where(keep, xi, ref))
                    else:
                        pieces.append(torch.lerp(ref.expand(r, numel), xi.expand(r, numel),
                                                 keep))
                else:
                    dst = out[a - start:b - start]
                    torch.gather(rows_mask.to(dst.dtype), 1, lab.expand(r, numel), out=dst)
                    torch.lerp(ref.expand(r, numel), xi.expand(r, numel), dst, out=dst)
                lvls.append(lv)
            if out is None:
                out = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
            levels = lvls[0] if len(lvls) == 1 else torch.cat(lvls)
            yield slice(start, stop), out.reshape(c, *shape), levels

    def apply(
        self,
        x: Any,
        masks: Any,
        *,
        seed: int | torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Perturbed:
        """All perturbed inputs at once (for modest ``n * m``; use :meth:`query` for more).

        Parameters
        ----------
        x : array-like of shape (*input_shape) or (n, *input_shape)
        masks : bool or float array of shape (m, d) or (n, m, d)
        seed : int or Generator, used by stochastic fills
        """
        xb, single = self._batch(x, torch.device(device) if device else None)
        chunks = list(self.iter_chunks(xb, masks, seed=seed))
        n = len(xb)
        inputs = torch.cat([c[1] for c in chunks]) if chunks else xb[:0]
        levels = torch.cat([c[2] for c in chunks]) if chunks else xb.new_zeros(0)
        m = len(levels) // n
        inputs = inputs.reshape(n, m, *xb.shape[1:])
        levels = levels.reshape(n, m)
        return Perturbed(inputs[0], levels[0]) if single else Perturbed(inputs, levels)

    def query(
        self,
        model: Model,
        x: Any,
        masks: Any,
        *,
        seed: int | torch.Generator | None = None,
        grad: bool = False,
        progress: bool = False,
        average: str | None = None,
    ) -> QueryResult:
        """Model outputs on every perturbation, one model batch at a time, levels passed along.

        Parameters
        ----------
        model : Model
            A wrapped model (see :func:`calix.models.wrap`).
        x : array-like of shape (*input_shape) or (n, *input_shape)
        masks : array of shape (m, d) or (n, m, d), or :class:`MaskBlocks`
        seed : int or Generator, used by stochastic fills
        grad : bool
            Keep the autograd graph (e.g. to optimise float masks).
        progress : bool
            Show a progress bar over batches.
        average : {None, "probability", "output"}
            With a :class:`Marginal` fill, evaluate every perturbation with every background
            row and return the outputs of the background-averaged model -- the interventional
            game: ``"probability"`` averages a classifier's probabilities (outputs are the log
            of the averages, so their softmax is E_b p), ``"output"`` averages raw outputs
            (logits, regression values). Ignored for other fills; None draws one background
            row per perturbation.

        Returns
        -------
        QueryResult with outputs of shape (n, m, n_outputs) (or (m, n_outputs)).
        """
        from calix._progress import progress_bar

        if not isinstance(model, Model):
            raise TypeError("model must be a calix Model; wrap it with calix.wrap(model) first")
        if average is not None and average not in _AVERAGES:
            raise ValueError(f"average must be None or one of {_AVERAGES}, got {average!r}")
        if average == "probability" and model.task != "classification":
            average = "output"
        xb, single = self._batch(x, model.device)
        model.check_input(xb[:0])  # x's shape against the model's (rows skip the check)
        before = model.n_queries
        n = len(xb)
        m_total = self._mask_count(masks)
        expand = average is not None and isinstance(self.fill, Marginal)
        n_bg = len(self.fill.background_) if expand and self.fill.background_ is not None else 1
        size = self.chunk_size or model.batch_size
        chunks = self.iter_chunks(xb, masks, seed=seed, chunk_size=size,
                                  expand_background=expand, reuse=not grad)
        total = math.ceil(n * m_total * n_bg / size)
        outs, lvls = [], []
        acc: Tensor | None = None
        for rows, inputs, levels in progress_bar(chunks, total=total, enabled=progress,
                                                 description="perturbations"):
            # inputs are built from the validated x and the fill: no second finiteness pass
            out = model.forward(inputs, levels=levels, grad=grad, validate=False)
            if not expand:
                outs.append(out)
                lvls.append(levels)
                continue
            if average == "probability":
                out = torch.softmax(out.double(), dim=-1)
            if acc is None:
                acc = out.new_zeros(n * m_total, out.shape[1], dtype=torch.float64)
                lvl_all = levels.new_zeros(n * m_total)
            q = torch.arange(rows.start, rows.stop, device=out.device) // n_bg
            # in place unless a graph must flow through the average
            acc = acc.index_add(0, q, out.double()) if grad else acc.index_add_(0, q, out.double())
            lvl_all.index_copy_(0, q, levels)
        if expand:
            if acc is None:
                raise ValueError("no perturbations to query (masks are empty)")
            mean = acc / n_bg
            if average == "probability":
                mean = torch.log(mean.clamp_min(1e-300))
            outputs, levels = mean.float(), lvl_all
        else:
            if not outs:
                raise ValueError("no perturbations to query (masks are empty)")
            outputs = torch.cat(outs)
            levels = torch.cat(lvls)
        m = len(levels) // n
        outputs = outputs.reshape(n, m, -1)
        levels = levels.reshape(n, m)
        used = model.n_queries - before
        if single:
            return QueryResult(outputs[0], levels[0], used)
        return QueryResult(outputs, levels, used)
