"""KernelSHAP and LIME: calix against Captum, shap and lime, side by side in one process.

Same model, same interpretable features, same fill and same sample budget for everyone:

- zoo CNN on digits (1x8x8), 16 features = ``PatchGrid(2)`` with ``Constant(0.0)`` fill (the
  peers get the same 16-patch feature mask and a zero baseline / "patch removed" = 0);
- zoo MLP on breast_cancer, 30 columns, fill = training mean (``Mean().fit(X_train)``; the peers
  get the same mean row as baseline / background).

The explained scalar is the softmax probability of the predicted class for every
implementation. Budgets: 2048 samples for KernelSHAP, 1000 for LIME. Peers:

- Captum ``KernelShap`` / ``Lime`` (``Lime`` with a ridge surrogate, alpha = 1, as calix and
  lime; its own default sampler and similarity kernel), timed for several
  ``perturbations_per_eval`` values; the best one counts;
- shap ``KernelExplainer`` (``l1_reg=False``: plain constrained least squares, as calix), over
  the 16 binary patch indicators (background all zeros = every patch removed) for images and
  over the 30 columns (background = the mean row) for tables; built per input (its function
  closes over the input and the class), which is counted;
- lime ``LimeImageExplainer`` (the 16-patch grid as segmentation, ``hide_color=0``, one batch)
  and ``LimeTabularExplainer`` (its default quartile sampler: it cannot fill with the mean).

The "forward limit" is one pass of the wrapped model (``Model.forward``) over as many
perturbed inputs as calix queries (built once with calix's engine, not timed): no explainer
that queries the model that often can beat it.

Printed: for one input, every configuration's wall time, its ratio to calix, the Pearson r of
its feature attributions with calix's (a check that everyone explains the same thing) and
calix's ratio to the forward limit; then many inputs (256 digits, all 114 breast_cancer test
rows) explained in one calix call against the peer that was fastest on one input explaining
them one by one (timed on 16 inputs and extrapolated linearly). Ends with the project's
targets as PASS/FAIL lines. Times are ``time.perf_counter`` wall times: best of up to 3 runs
(fewer for slow configurations) after one untimed warm-up call for one input, best of 2 for
many inputs. Takes about a minute on 2 idle CPU cores; other load on the machine skews it.

Run: .venv/bin/python benchmarks/explain.py
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from calix import zoo
from calix.explain import LIME, KernelSHAP
from calix.perturb import Columns, Constant, Fill, Mean, PatchGrid, Perturbation, Uniform

BUDGET = {"kernel_shap": 2048, "lime": 1000}
N_MANY = 256  # inputs explained together (fewer if the test split is smaller)
N_PEER = 16  # inputs the peer explains one by one; extrapolated to N_MANY
REPEATS = 3
PPE = (1, 16, 64, 256)  # Captum perturbations_per_eval values tried (and the full budget)
TARGET_FORWARD = 1.5  # calix within 1.5x of the forward limit
TARGET_ONE = 3.0  # calix >= 3x faster than the fastest peer on one input
TARGET_MANY = 5.0  # one calix call >= 5x faster than the fastest peer one by one


def best_of(fn: Callable[[], Any], repeats: int = REPEATS, slow_s: float = 1.0, *,
            warmup: bool = True) -> float:
    """Best wall time of ``fn`` (after an untimed warm-up); stops early once runs add up to
    more than ``slow_s`` seconds."""
    if warmup:
        fn()
    times: list[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if sum(times) > slow_s:
            break
    return min(times)


@dataclass
class Case:
    """One model with its features and fill, expressed for calix and for the peers."""

    title: str
    model: Any  # calix Model
    module: torch.nn.Module
    features: Any  # calix Features
    fill: Fill
    X: torch.Tensor  # inputs to explain, (n, *input_shape)
    targets: np.ndarray  # predicted class of every input
    mask: torch.Tensor  # feature index of every element, (1, *input_shape)
    baseline: torch.Tensor  # fill of every element, (1, *input_shape)
    X_train: np.ndarray
    image: bool

    @property
    def d(self) -> int:
        return int(self.mask.max()) + 1

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities of the module (what every peer explains)."""
        with torch.no_grad():
            return torch.softmax(self.module(x), dim=-1)


def make_case(name: str, data: str, title: str) -> Case:
    trained = zoo.train(name, data, seed=0)
    ds = trained.dataset
    model = trained.wrap()
    X = torch.as_tensor(ds.X_test[:N_MANY])
    image = X.ndim == 4
    if image:
        features, fill = PatchGrid(2), Constant(0.0)
    else:
        features, fill = Columns(), Mean().fit(ds.X_train)
    seg = Perturbation(features, fill).segment(X[:1])
    baseline = fill.reference(X[:1])
    with torch.no_grad():
        targets = model.forward(X).argmax(1).numpy()
    return Case(title, model, trained.module, features, fill, X, targets,
                seg.labels[:1].clone(), baseline.clone(), np.asarray(ds.X_train), image)


# ---------------------------------------------------------------------- implementations
Runner = Callable[[torch.Tensor, int], np.ndarray]  # one input (1, *shape), one class -> (d,)


def calix_explainer(case: Case, method: str) -> Any:
    cls = KernelSHAP if method == "kernel_shap" else LIME
    return cls(case.model, features=case.features, fill=case.fill, n_samples=BUDGET[method])


def captum_runner(case: Case, method: str, ppe: int) -> Runner:
    from captum._utils.models.linear_model import SkLearnRidge
    from captum.attr import KernelShap, Lime

    if method == "kernel_shap":
        expl = KernelShap(case.probs)
    else:
        expl = Lime(case.probs, interpretable_model=SkLearnRidge(alpha=1.0))

    def run(x: torch.Tensor, t: int) -> np.ndarray:
        attr = expl.attribute(x, baselines=case.baseline, target=t, feature_mask=case.mask,
                              n_samples=BUDGET[method], perturbations_per_eval=ppe)
        fv = np.zeros(case.d)
        fv[case.mask.reshape(-1).numpy()] = attr.reshape(-1).numpy()  # constant per feature
        return fv

    return run


def shap_runner(case: Case) -> Runner:
    import shap

    budget = BUDGET["kernel_shap"]
    lab = case.mask.reshape(-1).numpy()
    base = case.baseline.reshape(-1)

    def run(x: torch.Tensor, t: int) -> np.ndarray:
        if case.image:  # a function of the 16 binary patch indicators
            flat = x.reshape(-1)

            def f(z: np.ndarray) -> np.ndarray:
                keep = torch.as_tensor(z[:, lab] > 0.5)
                imgs = torch.where(keep, flat, base).reshape(len(z), *x.shape[1:])
                return case.probs(imgs)[:, t].numpy()

            expl = shap.KernelExplainer(f, np.zeros((1, case.d)))
            point = np.ones((1, case.d))
        else:

            def f(z: np.ndarray) -> np.ndarray:
                return case.probs(torch.as_tensor(z, dtype=torch.float32))[:, t].numpy()

            expl = shap.KernelExplainer(f, case.baseline.numpy())
            point = x.numpy()
        sv = expl.shap_values(point, nsamples=budget, l1_reg=False, silent=True)
        return np.asarray(sv).reshape(-1)

    return run


def lime_values(exp: Any, t: int, d: int) -> np.ndarray:
    fv = np.zeros(d)
    for j, w in exp.local_exp[t]:
        fv[j] = w
    return fv


def lime_runner(case: Case) -> Runner:
    budget = BUDGET["lime"]
    if case.image:
        from lime.lime_image import LimeImageExplainer

        segments = case.mask[0, 0].numpy()
        expl = LimeImageExplainer(random_state=0)

        def classify(imgs: np.ndarray) -> np.ndarray:  # (k, H, W, 3) grey as RGB
            return case.probs(torch.as_tensor(imgs[..., :1], dtype=torch.float32)
                              .permute(0, 3, 1, 2)).numpy()

        def run(x: torch.Tensor, t: int) -> np.ndarray:
            with contextlib.redirect_stderr(io.StringIO()):  # lime's tqdm bar
                exp = expl.explain_instance(
                    x[0, 0].double().numpy(), classify, labels=(t,), hide_color=0,
                    top_labels=None, num_features=case.d, num_samples=budget,
                    batch_size=budget, segmentation_fn=lambda img: segments, random_seed=0)
            return lime_values(exp, t, case.d)

        return run

    from lime.lime_tabular import LimeTabularExplainer

    expl = LimeTabularExplainer(case.X_train, mode="classification", random_state=0)

    def predict(z: np.ndarray) -> np.ndarray:
        return case.probs(torch.as_tensor(z, dtype=torch.float32)).numpy()

    def run(x: torch.Tensor, t: int) -> np.ndarray:
        exp = expl.explain_instance(x[0].numpy(), predict, labels=(t,), num_features=case.d,
                                    num_samples=budget)
        return lime_values(exp, t, case.d)

    return run


def forward_limit(case: Case, n_inputs: int, n_rows: int) -> float:
    """One ``Model.forward`` over ``n_inputs * n_rows`` perturbed inputs (built untimed)."""
    masks = Uniform().sample(n_rows, case.d, seed=0)
    inputs = Perturbation(case.features, case.fill).apply(case.X[:n_inputs], masks).inputs
    inputs = inputs.reshape(-1, *case.X.shape[1:])
    if len(inputs) > 100_000:  # the many-input case: best of 2, no warm-up
        return best_of(lambda: case.model.forward(inputs), 2, math.inf, warmup=False)
    return best_of(lambda: case.model.forward(inputs))


# ---------------------------------------------------------------------- the benchmark
def bench_one(case: Case, method: str) -> dict[str, Any]:
    """One input: calix, the forward limit and every peer."""
    x, t = case.X[:1], int(case.targets[0])
    n_rows = BUDGET[method] + (2 if method == "kernel_shap" else 0)
    expl = calix_explainer(case, method)
    t_calix = best_of(lambda: expl.explain(x))
    t_fwd = forward_limit(case, 1, n_rows)
    peers: dict[str, tuple[float, Runner]] = {}
    sweep = []
    for ppe in (*PPE, BUDGET[method]):
        run = captum_runner(case, method, ppe)
        sweep.append((ppe, best_of(lambda run=run: run(x, t)), run))
    ppe, t_best, run = min(sweep, key=lambda s: s[1])
    cap = "KernelShap" if method == "kernel_shap" else "Lime"
    peers[f"captum {cap} (ppe={ppe})"] = (t_best, run)
    if method == "kernel_shap":
        run = shap_runner(case)
        peers["shap KernelExplainer"] = (best_of(lambda: run(x, t)), run)
    else:
        run = lime_runner(case)
        kind = "LimeImageExplainer" if case.image else "LimeTabularExplainer"
        peers[f"lime {kind}"] = (best_of(lambda: run(x, t)), run)

    name = "KernelSHAP" if method == "kernel_shap" else "LIME"
    ref = expl.explain(x).feature_values[0]
    print(f"\n{case.title}: {name}, {BUDGET[method]} samples, one input")
    print(f"  {'implementation':<36}{'ms':>10}{'/ calix':>10}{'r vs calix':>12}")
    print(f"  {f'forward limit ({n_rows} rows)':<36}{t_fwd * 1e3:10.1f}{t_fwd / t_calix:10.2f}")
    print(f"  {'calix ' + name:<36}{t_calix * 1e3:10.1f}{1.0:10.2f}")
    for label, (tp, run) in peers.items():
        r = np.corrcoef(ref, run(x, t))[0, 1]  # same features and target: should agree
        print(f"  {label:<36}{tp * 1e3:10.1f}{tp / t_calix:10.2f}{r:12.3f}")
    cells = ", ".join(f"{p}: {tp * 1e3:.0f}" for p, tp, _ in sweep)
    print(f"  captum perturbations_per_eval sweep (ms): {cells}")
    print(f"  calix / forward limit: {t_calix / t_fwd:.2f}")
    fastest = min(peers, key=lambda k: peers[k][0])
    return {"case": case, "method": method, "name": name, "calix": t_calix, "forward": t_fwd,
            "peers": peers, "fastest": fastest, "n_rows": n_rows}


def bench_many(res: dict[str, Any]) -> dict[str, Any]:
    """All inputs in one calix call against the fastest peer one by one."""
    case, method = res["case"], res["method"]
    n = len(case.X)
    expl = calix_explainer(case, method)
    expl.explain(case.X[:2])  # warm-up
    t_calix = best_of(lambda: expl.explain(case.X), 2, math.inf, warmup=False)
    t_fwd = forward_limit(case, n, res["n_rows"])
    run = res["peers"][res["fastest"]][1]
    k = min(N_PEER, n)

    def peer_loop() -> None:
        for i in range(k):
            run(case.X[i : i + 1], int(case.targets[i]))

    t_peer = best_of(peer_loop, 2, math.inf, warmup=False) * n / k  # warmed up in bench_one
    print(f"\n{case.title}: {res['name']}, {n} inputs")
    print(f"  {'forward limit (' + str(n * res['n_rows']) + ' rows)':<44}{t_fwd:9.2f} s")
    print(f"  {'calix, one call':<44}{t_calix:9.2f} s   "
          f"calix / forward limit {t_calix / t_fwd:.2f}")
    print(f"  {res['fastest'] + ', one by one':<44}{t_peer:9.2f} s   "
          f"= {t_peer / t_calix:.1f}x calix (timed on {k} inputs, x{n / k:.2f} extrapolated)")
    return {**res, "many_calix": t_calix, "many_peer": t_peer, "n": n}


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    torch.manual_seed(0)
    t_start = time.perf_counter()
    from importlib.metadata import version

    peers = ", ".join(f"{p} {version(p)}" for p in ("captum", "shap", "lime"))
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), {peers}")
    print("explained: softmax probability of the predicted class; one input: best of up to "
          f"{REPEATS} after a warm-up; r vs calix: Pearson r of the feature attributions")
    cases = [
        make_case("cnn", "digits", "digits CNN, 16 patches (PatchGrid(2)), zero fill"),
        make_case("mlp", "breast_cancer", "breast_cancer MLP, 30 columns, mean fill"),
    ]
    results = [bench_one(case, method) for case in cases for method in BUDGET]
    results = [bench_many(res) for res in results]

    print("\nproject targets")
    for r in results:
        tag = f"{r['case'].title.split(',')[0]} {r['name']}"
        fwd = r["calix"] / r["forward"]
        one = r["peers"][r["fastest"]][0] / r["calix"]
        many = r["many_peer"] / r["many_calix"]
        print(f"  {verdict(fwd <= TARGET_FORWARD)}  {tag}: one input, calix / forward limit "
              f"{fwd:.2f} (target <= {TARGET_FORWARD})")
        print(f"  {verdict(one >= TARGET_ONE)}  {tag}: one input, fastest peer "
              f"({r['fastest']}) / calix {one:.1f} (target >= {TARGET_ONE})")
        print(f"  {verdict(many >= TARGET_MANY)}  {tag}: {r['n']} inputs, fastest peer one by "
              f"one / calix one call {many:.1f} (target >= {TARGET_MANY})")
    print(f"\ntotal benchmark time {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
