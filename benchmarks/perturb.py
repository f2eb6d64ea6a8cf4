"""Cost of building perturbations versus the model pass that consumes them.

Builds 10,000 perturbed 16x16 inputs (digits-noisy) with the calix engine for several
features/fills, times one batched forward pass of the zoo CNN over them, and prints the ratio
(goal: building < 0.5 x the model pass). A naive per-perturbation Python loop is timed on the
same work for reference.

Run: .venv/bin/python benchmarks/perturb.py
"""

from __future__ import annotations

import time

import torch

from calix import zoo
from calix.perturb import (
    Blur,
    Constant,
    Marginal,
    PatchGrid,
    Perturbation,
    Pixels,
    Superpixels,
    Uniform,
)

M = 10_000
REPEATS = 5


def best_of(fn, repeats=REPEATS):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    trained = zoo.train("cnn", "digits-noisy", seed=0)
    ds = trained.dataset
    x = torch.as_tensor(ds.X_test[:1])
    model = trained.wrap(batch_size=M)

    cases = {
        "patch 4x4 / zero": Perturbation(PatchGrid(4), Constant(0.0), chunk_size=M),
        "pixels / zero": Perturbation(Pixels(), Constant(0.0), chunk_size=M),
        "patch 4x4 / blur 11x11": Perturbation(PatchGrid(4), Blur(11, 5.0), chunk_size=M),
        "slic ~50 / blur 11x11": Perturbation(Superpixels(50), Blur(11, 5.0), chunk_size=M),
        "patch 4x4 / marginal": Perturbation(
            PatchGrid(4), Marginal(torch.as_tensor(ds.X_train)), chunk_size=M),
    }
    inputs = Perturbation(PatchGrid(4), Constant(0.0)).apply(
        x, Uniform().sample(M, 16, seed=0)).inputs[0]
    with torch.no_grad():
        model.forward(inputs[:64])  # warm-up
        t_model = best_of(lambda: model.forward(inputs))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{M} perturbed 16x16 inputs, best of {REPEATS}")
    print(f"model pass (zoo CNN, one batch of {M}): {t_model * 1e3:8.1f} ms")
    print(f"{'perturbation':<26}{'build ms':>10}{'build/model':>13}")
    for name, engine in cases.items():
        d = engine.n_features(x)
        masks = Uniform().sample(M, d, seed=0)
        t = best_of(lambda e=engine, mk=masks: e.apply(x, mk, seed=0))
        print(f"{name:<26}{t * 1e3:10.1f}{t / t_model:13.3f}")

    # Reference: the same patch/zero work with a Python loop per perturbation.
    engine = cases["patch 4x4 / zero"]
    seg = engine.segment(x)
    masks = Uniform().sample(M, 16, seed=0)

    def naive():
        out = torch.empty(M, *x.shape)
        for j in range(M):
            keep = masks[j][seg.labels[0]]
            out[j] = torch.where(keep, x[0], torch.zeros_like(x[0]))
        return out

    t_naive = best_of(naive, repeats=2)
    t_vec = best_of(lambda: engine.apply(x, masks))
    print(f"naive loop per perturbation (patch/zero): {t_naive * 1e3:.1f} ms "
          f"= {t_naive / t_vec:.0f}x the vectorised engine, "
          f"{t_naive / t_model:.2f}x the model pass")


if __name__ == "__main__":
    main()
