"""MC-Dropout explanation distributions: calix's batched sampling against the naive loop.

Zoo CNN on digits (1x8x8, dropout 0.25), the first 64 test images, T = 30 MC-Dropout samples.
Explainers: Saliency (signed gradient), Guided Backprop, Integrated Gradients (``n_steps=30``,
zero baseline, Gauss-Legendre), all on the softmax probability of the target class. Timed:

- (a) calix, batched: ``explanation_distribution(explainer, MCDropout(model, n_samples=30),
  x)`` -- ONE explainer call on the 64 images repeated 30 times (1920 rows), every row with its
  own seeded dropout masks; includes the predictive pass that picks the target (the class
  predicted by the mean of the samples) and the mean / std / CV summary;
- (b) naive: 30 Captum calls (``captum.attr.Saliency(forward).attribute(x, abs=False)``,
  ``GuidedBackprop``, ``IntegratedGradients``), each on the 64 images, where ``forward`` is the
  torch module followed by a softmax, with the module's ``nn.Dropout`` layers switched on by
  ``.train()`` (dropout layers only, restored afterwards); targets precomputed (untimed), the
  30 maps stacked and averaged;
- (c) calix's own loop, for reference: ``for m in MCDropout(model, n_samples=30).models():
  explainer.explain(x, target=targets)`` (30 calls of 64 rows; targets passed so that every
  sample explains the same class, as (a) does).

Also printed: "plain", the bare compute -- the module (dropout on) plus softmax, forward and
backward of the target probability over the same rows (IG: 30 path steps per row), the faster
of one pass of all 1920 rows or 30 passes of 64 images, with no explainer around it; naive /
plain near 1 means the naive loop is compute-bound and leaves batching little per-call overhead
to save (plain is a reference, not a strict floor: chunk sizes and dropout kernels differ); and
two agreement checks: the max |difference| of the mean maps of (a) and
(c) -- (a) gives every row its own dropout mask when the explainer sends one row per input
(Saliency, Guided Backprop) and otherwise runs whole sampled sub-networks, exactly as (c); so
for IG (a) and (c) agree exactly, for the single-pass explainers they agree statistically --
and the Pearson r of the mean maps of (a) and (b) (different masks: statistical agreement).

Times are ``time.perf_counter`` wall times, best of 3 after one untimed warm-up. Ends with the
goal (naive / calix >= 3x for the gradient methods) as PASS/FAIL lines. Captum's "Internal
batch size cannot be less than the number of input examples" warning (IG on 1920 rows, more
than the model's batch size of 1024) is silenced. Takes about half a minute on 2 idle CPU
cores with the zoo cache warm; other load on the machine skews the times.

Run: CALIX_CACHE=/tmp/u-cache .venv/bin/python benchmarks/uncertainty.py
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from calix import zoo
from calix.explain import GuidedBackprop, IntegratedGradients, Saliency
from calix.uncertainty import MCDropout, explanation_distribution

N_IMAGES = 64
T = 30
IG_STEPS = 30
REPEATS = 3
TARGET = 3.0  # naive loop / calix batched, gradient methods

CALIX: dict[str, Callable[[Any], Any]] = {
    "Saliency": lambda m: Saliency(m),
    "Guided Backprop": lambda m: GuidedBackprop(m),
    "Integrated Gradients": lambda m: IntegratedGradients(m, n_steps=IG_STEPS, baselines="zero"),
}


def best_of(fn: Callable[[], Any], repeats: int = REPEATS) -> float:
    """Best wall time of ``fn`` after one untimed warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


@contextlib.contextmanager
def dropout_on(module: nn.Module) -> Iterator[None]:
    """The module's ``nn.Dropout`` layers in train mode; their modes restored on exit."""
    layers = [m for m in module.modules() if isinstance(m, nn.Dropout)]
    saved = [layer.training for layer in layers]
    for layer in layers:
        layer.train()
    try:
        yield
    finally:
        for layer, mode in zip(layers, saved, strict=True):
            layer.train(mode)


def naive_loop(method: str, module: nn.Module, x: torch.Tensor, targets: list[int]
               ) -> torch.Tensor:
    """T Captum calls on the module (+ softmax) with its dropout on; the mean map."""
    import captum.attr as ca

    forward = nn.Sequential(module, nn.Softmax(dim=-1))
    maps = []
    with dropout_on(module), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        for _ in range(T):
            xi = x.detach().clone().requires_grad_(True)
            if method == "Saliency":
                a = ca.Saliency(forward).attribute(xi, target=targets, abs=False)
            elif method == "Guided Backprop":
                a = ca.GuidedBackprop(forward).attribute(xi, target=targets)
            else:
                a = ca.IntegratedGradients(forward).attribute(
                    xi, baselines=torch.zeros_like(xi), target=targets, n_steps=IG_STEPS)
            maps.append(a.detach())
    return torch.stack(maps).mean(0)


def plain_compute(method: str, module: nn.Module, x: torch.Tensor, targets: list[int]) -> float:
    """Forward + backward of the target probability over the rows every method must evaluate:
    T * n rows (IG: times n_steps), as one pass per step or T passes of n rows per step."""
    steps = IG_STEPS if method == "Integrated Gradients" else 1
    tgt = torch.as_tensor(targets)

    def pass_(rows: torch.Tensor, t: torch.Tensor) -> None:
        rows = rows.detach().requires_grad_(True)
        p = torch.softmax(module(rows), -1).gather(1, t[:, None]).sum()
        torch.autograd.grad(p, rows)

    rep, tgt_rep = x.repeat(T, 1, 1, 1), tgt.repeat(T)
    with dropout_on(module):
        one = best_of(lambda: [pass_(rep, tgt_rep) for _ in range(steps)])
        many = best_of(lambda: [pass_(x, tgt) for _ in range(T * steps)])
    return min(one, many)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    torch.manual_seed(0)
    warnings.filterwarnings("ignore", message="Internal batch size cannot be less")
    t_start = time.perf_counter()
    import captum

    trained = zoo.train("cnn", "digits", seed=0)
    model, module = trained.wrap(), trained.module
    x = torch.as_tensor(trained.dataset.X_test[:N_IMAGES])
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), captum "
          f"{captum.__version__}; zoo CNN on digits (dropout {trained.config['dropout']}), "
          f"{N_IMAGES} images, T = {T}")
    print("times: best of 3 after a warm-up; (a) calix batched explanation_distribution, "
          "(b) naive loop of\nCaptum calls, (c) calix loop over MCDropout.models(); plain: "
          "fwd + bwd of the bare module over the same rows")

    head = (f"{'explainer':<22}{'(a) calix':>11}{'(b) naive':>11}{'(c) loop':>10}{'plain':>9}"
            f"{'b / a':>8}{'c / a':>8}{'b / plain':>11}{'|a - c|':>10}{'r(a, b)':>9}")
    print("\n" + head + "\n" + "-" * len(head))
    results = {}
    for name, make in CALIX.items():
        explainer = make(model)
        dist = explanation_distribution(explainer, MCDropout(model, n_samples=T), x)
        targets = dist.target.tolist()

        def calix_batched(explainer: Any = explainer) -> Any:
            return explanation_distribution(explainer, MCDropout(model, n_samples=T), x)

        def calix_loop(explainer: Any = explainer, targets: list[int] = targets) -> np.ndarray:
            return np.mean([explainer.explain(x, target=targets).values
                            for _ in MCDropout(model, n_samples=T).models()], 0)

        t_a = best_of(calix_batched)
        t_b = best_of(lambda name=name, targets=targets: naive_loop(name, module, x, targets))
        t_c = best_of(calix_loop)
        t_f = plain_compute(name, module, x, targets)

        mean_a = calix_batched().values
        diff = float(np.abs(mean_a - calix_loop()).max() / np.abs(mean_a).max())
        mean_b = naive_loop(name, module, x, targets).numpy()
        r = float(np.corrcoef(mean_a.ravel(), mean_b.ravel())[0, 1])
        results[name] = t_b / t_a
        print(f"{name:<22}{t_a * 1e3:9.0f}ms{t_b * 1e3:9.0f}ms{t_c * 1e3:8.0f}ms"
              f"{t_f * 1e3:7.0f}ms{t_b / t_a:8.2f}{t_c / t_a:8.2f}{t_b / t_f:11.2f}"
              f"{diff:10.1e}{r:9.3f}")
    print("-" * len(head))
    print("b / a: speed-up of calix over the naive loop; b / plain: the naive loop's overhead "
          "over bare compute\n|a - c|: max |mean map (a) - mean map (c)| / max |mean map (a)|; "
          "r(a, b): Pearson r of the mean maps of (a) and (b)")
    print(f"\ntotal benchmark time {time.perf_counter() - t_start:.0f} s")
    print("\nproject targets")
    for name, ratio in results.items():
        print(f"  {verdict(ratio >= TARGET)}  {name}: naive loop / calix batched {ratio:.2f} "
              f"(target >= {TARGET})")


if __name__ == "__main__":
    main()
