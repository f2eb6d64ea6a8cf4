"""Shapley estimators scored against exact Shapley values.

Six games (see ``benchmarks/_games.py``): MLPs on wine (13 columns) and on breast_cancer (30
columns in 15 groups), a gradient-boosted classifier on 14 breast_cancer columns, the digits
CNN with 2x2 patches (16 players), a nearly additive game (16 players) and a game with strong
interactions of order 3 to 6 (14 players). Exact Shapley values enumerate all 2^d coalitions
(calix's ``exact_shapley``).

Budgets are model queries per input, the empty and the full coalition included: 5d, 8d, 10d,
20d and 50d; seeds 0..4 (``--quick``: 2 inputs per game, seeds 0..1). Every estimator gets the
largest budget parameter whose queries stay within the budget: it is run with the budget, and
when it used more (calix's KernelSHAP adds the two end coalitions to ``n_samples``) the
parameter is lowered by the excess and the run repeated; the queries actually used are
reported.

- calix estimators are looked up by name in ``calix.explain`` (table ``CALIX`` below; names
  that do not exist are skipped and listed), built as
  ``Cls(model, n_samples=..., seed=seed, features=..., fill=..., output=..., **extra)`` and
  run on all inputs of a game at once with ``.explain(x, target=...)``; queries per input =
  ``exp.n_queries / n``.
- shapiq 1.x approximators, ``Approximator(n=d, random_state=seed, ...).approximate(budget,
  game)`` on the plain value function (boolean coalitions (k, d) -> values); the Shapley values
  are the first-order values (``InteractionValues.get_n_order_values(1)``; kADD-SHAP's are the
  Shapley values of its fitted k-additive game). shapiq does not subtract v(∅) from a plain
  callable game (only its ``Game`` class normalises), and its estimators work with differences
  of the game's values (the regressions subtract v(∅) themselves), so nothing is shifted here.
- shap's ``KernelExplainer`` (``l1_reg=False``, background = the fill, ``nsamples`` = budget
  − 2: shap also evaluates the background and the input) and ``PermutationExplainer``
  (``max_evals`` = budget, which shap spends in whole permutations of 2d + 1 evaluations), both
  on the coalition space: x = ones(d), background = zeros(d), model = the value function.

Every peer call goes through a counter on the value function; a run over the budget is flagged.

Metrics per (game, estimator, budget), mean over inputs and seeds: normalised squared error
Σ(φ̂ − φ)² / Σφ², Spearman correlation with φ, precision of the top 5 by |φ|, coverage of
the intervals ``[lower, upper]`` (estimators that return them) with their mean width over the
root mean square of φ, and queries used per input.

The summary names the best estimator per game and budget and, where calix's default is not
it, a two-sided Wilcoxon signed-rank test of the two estimators' errors paired by seed and
input, and every estimator's worst ratio to the best over all cells (the cell named): the
measure on which calix's default is built to do well. A last comparison runs calix's
LeverageSHAP against calix's KernelSHAP and shap's KernelExplainer (the baseline of Leverage
SHAP's paper) at 8d over ``LEVERAGE_SEEDS`` seeds (all three are cheap), paired by seed, on the
tabular games and on the paper's own setting (``diabetes-gbr``: a boosted-tree regressor, mean
baseline; ``--leverage-only`` runs just this).

``--coverage-only`` measures the coverage of the default's 95% intervals at 10d, 20d and 50d
on ``COVERAGE_INPUTS`` inputs per game (5 seeds), with a standard error over inputs: on the
main run's 5 inputs a cell's coverage is only known to about ±0.012.

The full run took 19 minutes on one core of a 2-core machine (one torch thread), ``--quick``
a few minutes; calix's default (StackedSHAP) takes most of the time, then the tree proxies
(OddSHAP's and RegressionAdjustedSHAP's).

Run:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/shapley.py [--quick] [--games a,b]
        [--estimators KernelSHAP,"shapiq SVARM"] [--json PATH]
        [--leverage-only | --coverage-only] [--inputs N]
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _games  # noqa: E402

# ---------------------------------------------------------------------- calix estimators
#: (label, class name in calix.explain, extra constructor arguments). A name that calix does
#: not have is skipped. Add rows here to benchmark more calix estimators.
CALIX: list[tuple[str, str, dict[str, Any]]] = [
    ("KernelSHAP", "KernelSHAP", {}),
    ("LeverageSHAP", "LeverageSHAP", {}),
    ("PolySHAP", "PolySHAP", {}),
    ("OddSHAP", "OddSHAP", {}),
    ("OddSHAP(resid;η=5)", "OddSHAP", {"proxy_target": "residual", "interaction_factor": 5}),
    ("RegAdj(linear)", "RegressionAdjustedSHAP", {"proxy": "linear"}),
    ("RegAdj(quadratic)", "RegressionAdjustedSHAP", {"proxy": "quadratic"}),
    ("RegAdj(tree)", "RegressionAdjustedSHAP", {"proxy": "tree"}),
    ("LogitSurrogateSHAP", "LogitSurrogateSHAP", {}),
    ("Shapley", "Shapley", {}),
]
#: calix's default Shapley estimator (its ratio to the best is summarised)
DEFAULT = "Shapley"
#: calix's logit-surrogate estimator was called PolySHAP (with a ``link`` parameter) before
#: that name went to the published PolySHAP; the old name stands in while the new is missing
_FORMER_NAMES = {"LogitSurrogateSHAP": "PolySHAP"}

BUDGET_FACTORS = (5, 8, 10, 20, 50)
#: normalised errors below this are rounding (float32 models): ratios treat them as equal
FLOOR = 1e-10
SEEDS = (0, 1, 2, 3, 4)
N_INPUTS = 5
QUICK_SEEDS = (0, 1)
#: seeds of the extra Leverage SHAP vs KernelSHAP comparison at 8d
LEVERAGE_SEEDS = 40
QUICK_INPUTS = 2


def _has_param(cls: Any, name: str) -> bool:
    try:
        return name in inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return False


def resolve_calix(class_name: str) -> tuple[Any, str]:
    """The calix class for ``class_name`` (or None) and a note on how it was found."""
    import calix.explain as ce

    cls = getattr(ce, class_name, None)
    if class_name == "PolySHAP" and cls is not None and _has_param(cls, "link"):
        return None, ("calix.explain.PolySHAP is still calix's logit-surrogate estimator "
                      "(it has `link`), not the published PolySHAP")
    if cls is None and class_name in _FORMER_NAMES:
        old = getattr(ce, _FORMER_NAMES[class_name], None)
        if old is not None and _has_param(old, "link"):
            return old, f"as calix.explain.{_FORMER_NAMES[class_name]} (its former name)"
    if cls is None:
        return None, f"calix.explain has no {class_name}"
    return cls, ""


# ---------------------------------------------------------------------- peers
class Counter:
    """A value function that counts the coalitions it evaluates."""

    def __init__(self, v: Callable[[np.ndarray], np.ndarray]):
        self.v, self.n = v, 0

    def __call__(self, coalitions: Any) -> np.ndarray:
        z = np.atleast_2d(np.asarray(coalitions))
        if z.dtype != bool:
            z = z > 0.5  # shap passes the masked 0/1 rows as floats
        self.n += len(z)
        return self.v(z)


def _shapiq(name: str, **kw: Any) -> Callable[..., np.ndarray]:
    def run(v: Counter, d: int, param: int, seed: int) -> np.ndarray:
        import shapiq.approximator as sa

        approx = getattr(sa, name)(n=d, random_state=seed, **kw)
        return np.asarray(approx.approximate(param, v).get_n_order_values(1), dtype=np.float64)

    return run


def _shap_kernel(v: Counter, d: int, param: int, seed: int) -> np.ndarray:
    import shap

    expl = shap.KernelExplainer(v, np.zeros((1, d)))
    np.random.seed(seed)  # noqa: NPY002 -- shap draws from numpy's global RNG
    sv = expl.shap_values(np.ones((1, d)), nsamples=param, l1_reg=False, silent=True)
    return np.asarray(sv, dtype=np.float64).reshape(-1)


def _shap_permutation(v: Counter, d: int, param: int, seed: int) -> np.ndarray:
    import shap

    expl = shap.PermutationExplainer(v, np.zeros((1, d)), seed=seed)
    res = expl(np.ones((1, d)), max_evals=param, silent=True)
    return np.asarray(res.values, dtype=np.float64).reshape(-1)


#: (label, runner(value_function, d, budget_parameter, seed) -> φ̂ (d,), first parameter for
#: a budget). Pairing (a coalition with its complement) is on where shapiq offers it for the
#: kernel regressions.
PEERS: list[tuple[str, Callable[..., np.ndarray], Callable[[int], int]]] = [
    ("shapiq KernelSHAP", _shapiq("KernelSHAP", pairing_trick=True), lambda b: b),
    ("shapiq kADDSHAP", _shapiq("kADDSHAP", pairing_trick=True), lambda b: b),
    ("shapiq PermutationSamplingSV", _shapiq("PermutationSamplingSV"), lambda b: b),
    ("shapiq SVARM", _shapiq("SVARM"), lambda b: b),
    ("shapiq UnbiasedKernelSHAP", _shapiq("UnbiasedKernelSHAP", pairing_trick=True),
     lambda b: b),
    ("shapiq StratifiedSamplingSV", _shapiq("StratifiedSamplingSV"), lambda b: b),
    ("shap KernelExplainer", _shap_kernel, lambda b: b - 2),
    ("shap PermutationExplainer", _shap_permutation, lambda b: b),
]


# ---------------------------------------------------------------------- metrics
def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def scores(phi_hat: np.ndarray, phi: np.ndarray, lower: np.ndarray | None,
           upper: np.ndarray | None) -> dict[str, np.ndarray]:
    """Per-input metrics of estimates (n, d) against exact values (n, d)."""
    nse = ((phi_hat - phi) ** 2).sum(1) / (phi**2).sum(1)
    sp = np.array([_spearman(a, b) for a, b in zip(phi_hat, phi, strict=True)])
    k = min(5, phi.shape[1])
    top = lambda a: set(np.argsort(-np.abs(a), kind="stable")[:k].tolist())  # noqa: E731
    prec = np.array([len(top(a) & top(b)) / k for a, b in zip(phi_hat, phi, strict=True)])
    out = {"nse": nse, "spearman": sp, "precision5": prec}
    if lower is not None and upper is not None:
        out["coverage"] = ((lower <= phi) & (phi <= upper)).mean(1)
        out["width"] = (upper - lower).mean(1) / np.sqrt((phi**2).mean(1))
    return out


def _reason(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return text if len(text) <= 110 else text[:107] + "..."


# ---------------------------------------------------------------------- runners
class Runner:
    """Runs one estimator on one game at one budget over the seeds, keeping to the budget."""

    def __init__(self, game: _games.Game, phi: np.ndarray):
        self.game, self.phi = game, phi

    def calix(self, cls: Any, extra: dict[str, Any], param: int, seed: int
              ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, float]:
        g = self.game
        expl = cls(g.model, n_samples=param, seed=seed, **g.explainer_kwargs(), **extra)
        exp = expl.explain(g.x, target=g.target)
        phi_hat = np.asarray(exp.feature_values, dtype=np.float64)
        lo = None if exp.lower is None else np.asarray(exp.lower, dtype=np.float64)
        hi = None if exp.upper is None else np.asarray(exp.upper, dtype=np.float64)
        if lo is not None and lo.shape != phi_hat.shape:
            lo = hi = None  # intervals of a map, not of the features
        return phi_hat, lo, hi, exp.n_queries / g.n

    def peer(self, run: Callable[..., np.ndarray], param: int, seed: int
             ) -> tuple[np.ndarray, None, None, float]:
        g = self.game
        rows, used = [], []
        for i in range(g.n):
            v = Counter(g.value_function(i))
            rows.append(run(v, g.d, param, seed))
            used.append(v.n)
        return np.stack(rows), None, None, float(np.mean(used))

    def cell(self, call: Callable[[int, int], tuple], first: int, budget: int,
             seeds: tuple[int, ...]) -> dict[str, Any]:
        """All seeds at one budget: metrics, queries, the parameter used, wall time."""
        param, t0 = first, time.perf_counter()
        per: dict[str, list[np.ndarray]] = {}
        used_all, over = [], 0
        for attempt in range(4):  # lower the parameter until the first seed fits the budget
            if param < 1:
                raise ValueError(f"no budget parameter keeps within {budget} queries")
            out = call(param, seeds[0])
            if out[3] <= budget + 1e-9 or attempt == 3:
                break
            param -= max(1, math.ceil(out[3] - budget))
        t_run = time.perf_counter()
        results = [out]
        for s in seeds[1:]:
            results.append(call(param, s))
        elapsed = time.perf_counter() - t_run + (t_run - t0) / max(1, attempt + 1)
        for phi_hat, lo, hi, used in results:
            for k, v in scores(phi_hat, self.phi, lo, hi).items():
                per.setdefault(k, []).append(v)
            used_all.append(used)
            over += used > budget + 1e-9
        cell = {k: float(np.mean(v)) for k, v in per.items()}
        cell["nse_per_seed"] = [float(np.mean(v)) for v in per["nse"]]
        cell["nse_runs"] = [float(e) for v in per["nse"] for e in v]  # seed-major, per input
        cell["queries"] = float(np.mean(used_all))
        cell["queries_max"] = float(np.max(used_all))
        cell["param"] = int(param)
        cell["seconds"] = elapsed
        cell["over_budget_runs"] = int(over)
        return cell


def _errors(rows: dict[str, dict[Any, dict[str, Any]]], b: Any) -> dict[str, float]:
    """The mean normalised error at budget ``b`` of every estimator in ``rows`` (name -> cells
    by budget) that ran there."""
    return {name: c[b]["nse"] for name, c in rows.items() if "nse" in c.get(b, {})}


def paired_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of paired errors (None when all equal)."""
    from scipy.stats import wilcoxon

    diff = np.asarray(a) - np.asarray(b)
    if len(a) != len(b) or not np.any(diff):
        return None
    return float(wilcoxon(a, b).pvalue)


def leverage_vs_kernel(keys: list[str], n_inputs: int, n_seeds: int = LEVERAGE_SEEDS
                       ) -> dict[str, Any]:
    """calix's LeverageSHAP at 8d against two KernelSHAPs, on more seeds than the main run
    (all three are cheap): calix's (paired, border enumeration) and shap's KernelExplainer, the
    baseline of Leverage SHAP's paper. The MLP games (a, b) run once more on their logits
    (keys ``a:logit``, ``b:logit``), to tell whether the probability scale decides. Per game:
    mean errors, each ratio, the seeds on which Leverage SHAP is lower and a paired Wilcoxon
    test over seeds."""
    games = [(k, "probability") for k in keys] + [(k, "logit") for k in keys if k in ("a", "b")]
    return {key if output == "probability" else f"{key}:{output}": res
            for (key, output), res in zip(games, _leverage_vs_kernel(games, n_inputs, n_seeds),
                                          strict=True)}


def _leverage_vs_kernel(games: list[tuple[str, str]], n_inputs: int, n_seeds: int
                        ) -> list[dict[str, Any]]:
    from calix.explain import KernelSHAP, LeverageSHAP

    print(f"\n=== Leverage SHAP vs KernelSHAP at 8d, seeds 0..{n_seeds - 1} (each seed: mean "
          f"normalised error over {n_inputs} inputs)")
    out = []
    for key, output in games:
        game = _games.build_game(key, n_inputs, output)
        phi, b = game.exact(), 8 * game.d
        runner = Runner(game, phi)
        runs = {"LeverageSHAP": (runner.calix, (LeverageSHAP, {}, b)),
                "KernelSHAP": (runner.calix, (KernelSHAP, {}, b)),
                "shap KernelExplainer": (runner.peer, (_shap_kernel, b - 2))}
        errs: dict[str, list[float]] = {name: [] for name in runs}
        for s in range(n_seeds):
            for name, (call, args) in runs.items():
                phi_hat, _, _, used = call(*args, s)
                assert used <= b
                errs[name].append(float(scores(phi_hat, phi, None, None)["nse"].mean()))
        lev = np.asarray(errs["LeverageSHAP"])
        out.append({"name": game.name, "d": game.d, "budget": b, "seeds": n_seeds,
                    "leverage": float(lev.mean())})
        print(f"  {game.name:<26} 8d={b:>4}: LeverageSHAP {lev.mean():.3e}")
        for base, label in (("KernelSHAP", "calix KernelSHAP"),
                            ("shap KernelExplainer", "shap KernelExplainer")):
            ker = np.asarray(errs[base])
            ratio, wins = float(lev.mean() / ker.mean()), int((lev < ker).sum())
            p = paired_p(lev.tolist(), ker.tolist())
            out[-1][label] = {"nse": float(ker.mean()), "ratio": ratio,
                              "leverage_lower_seeds": wins, "p": p}
            print(f"  {'':<26} {'vs ' + label:<24} {ker.mean():.3e}: ratio {ratio:.2f}; "
                  f"Leverage lower on {wins}/{n_seeds} seeds, Wilcoxon p = "
                  f"{'n/a' if p is None else f'{p:.2g}'}")
    return out


#: inputs per game of the coverage run (``--coverage-only``)
COVERAGE_INPUTS = 20
COVERAGE_FACTORS = (10, 20, 50)


def default_coverage(keys: list[str], n_inputs: int = COVERAGE_INPUTS,
                     seeds: tuple[int, ...] = SEEDS,
                     factors: tuple[int, ...] = COVERAGE_FACTORS) -> dict[str, Any]:
    """Coverage of calix's default's 95% intervals on more inputs than the main run, with a
    standard error per cell: each input's coverage averaged over seeds and features, the
    spread of those over inputs / √inputs (features of one input, and seeds on one input,
    are correlated; inputs are not). Also the number of interval misses by less than the
    outputs' rounding (|φ̂ − φ| − half-width below 4 eps32 · max|φ|)."""
    cls, _ = resolve_calix("Shapley")
    print(f"\n=== coverage of calix's default 95% intervals: {n_inputs} inputs x "
          f"{len(seeds)} seeds per cell (± one standard error over inputs)")
    out: dict[str, Any] = {}
    eps32 = float(np.finfo(np.float32).eps)
    for key in keys:
        game = _games.build_game(key, n_inputs)
        phi = game.exact()
        runner = Runner(game, phi)
        out[key] = {"name": game.name, "d": game.d, "n_inputs": game.n}
        cells = []
        for f in factors:
            b = f * game.d
            cov = np.zeros((len(seeds), game.n))
            near = 0
            for j, s in enumerate(seeds):
                phi_hat, lo, hi, used = runner.calix(cls, {}, b, s)
                assert used <= b and lo is not None
                inside = (lo <= phi) & (phi <= hi)
                cov[j] = inside.mean(1)
                miss = np.maximum(lo - phi, phi - hi)
                near += int(((miss > 0) & (miss < 4 * eps32 * np.abs(phi).max(1,
                                                                              keepdims=True))
                             ).sum())
            per_input = cov.mean(0)
            mean, se = float(per_input.mean()), float(per_input.std(ddof=1) / np.sqrt(game.n))
            n_int = cov.size * game.d
            out[key][f"{f}d"] = {"coverage": mean, "se": se, "intervals": n_int,
                                 "misses_within_rounding": near}
            cells.append(f"{f}d {mean:.3f} ± {se:.3f}" + (f" ({near} of "
                         f"{int(round((1 - mean) * n_int))} misses within rounding)"
                         if near else ""))
        print(f"  {game.name:<20} " + "   ".join(cells), flush=True)
    return out


# ---------------------------------------------------------------------- printing
def _fmt(v: float | None, kind: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if kind == "nse":
        return f"{v:.2e}"
    if kind == "ratio":
        return f"{v:.2f}" if v < 100 else f"{v:.0f}" if v < 1e4 else f"{v:.1e}"
    if kind == "queries":
        return f"{v:.0f}"
    return f"{v:.3f}"


def print_table(title: str, rows: dict[str, dict[int, dict[str, Any]]], budgets: list[int],
                key: str, kind: str, width: int, extra_col: dict[str, str] | None = None
                ) -> None:
    head = "".join(f"{f'{f}d':>10}" for f in BUDGET_FACTORS[:len(budgets)])
    print(f"  {title}")
    print(f"    {'estimator':<{width}}{head}" + ("   time s" if extra_col else ""))
    for name, cells in rows.items():
        vals = []
        for b in budgets:
            c = cells.get(b)
            vals.append("n/a" if c is None or "error" in c else _fmt(c.get(key), kind))
        if all(v == "n/a" for v in vals) and key in ("coverage", "width"):
            continue
        line = f"    {name:<{width}}" + "".join(f"{v:>10}" for v in vals)
        if extra_col:
            line += f"{extra_col.get(name, ''):>9}"
        print(line)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 inputs per game, seeds 0..1")
    ap.add_argument("--games", default=None,
                    help="comma-separated game keys (default a-f; g: diabetes-gbr, which the "
                         "Leverage comparison adds when no games are given)")
    ap.add_argument("--estimators", default=None,
                    help="comma-separated estimator labels (default: all)")
    ap.add_argument("--json", default=None, help="write all numbers to this JSON file")
    ap.add_argument("--inputs", type=int, default=None, help="inputs per game")
    only = ap.add_mutually_exclusive_group()
    only.add_argument("--coverage-only", action="store_true",
                      help=f"only the coverage of the default's intervals, on "
                           f"{COVERAGE_INPUTS} inputs per game (or --inputs)")
    only.add_argument("--leverage-only", action="store_true",
                      help="only the Leverage SHAP vs KernelSHAP comparison (tabular games "
                           "and diabetes-gbr)")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    t_start = time.perf_counter()
    seeds = QUICK_SEEDS if args.quick else SEEDS
    n_inputs = args.inputs or (QUICK_INPUTS if args.quick else N_INPUTS)
    keys = ([k.strip() for k in args.games.split(",") if k.strip()] if args.games
            else list(_games.GAME_KEYS))
    # the Leverage comparison: the tabular games asked for, and diabetes-gbr (its paper's
    # setting) unless the games were named
    leverage_keys = [k for k in keys if k in _games.TABULAR + _games.EXTRA_KEYS]
    if not args.games:
        leverage_keys += list(_games.EXTRA_KEYS)
    leverage_seeds = len(QUICK_SEEDS) if args.quick else LEVERAGE_SEEDS
    wanted = None if args.estimators is None else {
        s.strip() for s in args.estimators.split(",") if s.strip()}

    from importlib.metadata import version

    print(f"torch {torch.__version__} ({torch.get_num_threads()} thread), shapiq "
          f"{version('shapiq')}, shap {version('shap')}, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}")
    if args.coverage_only or args.leverage_only:
        report = ({"coverage": default_coverage(keys, args.inputs or COVERAGE_INPUTS, seeds)}
                  if args.coverage_only else
                  {"leverage_vs_kernel_8d_more_seeds": leverage_vs_kernel(
                      leverage_keys, n_inputs, leverage_seeds)})
        print(f"total {time.perf_counter() - t_start:.0f} s")
        _write_json(args.json, report)
        return report
    print(f"{'quick' if args.quick else 'full'} run: {n_inputs} inputs per game, seeds "
          f"{seeds[0]}..{seeds[-1]}, budgets {', '.join(f'{f}d' for f in BUDGET_FACTORS)} "
          "(queries per input, end coalitions included)")

    calix_rows: list[tuple[str, Any, dict[str, Any], str]] = []
    skipped: dict[str, str] = {}
    for label, cname, extra in CALIX:
        if wanted is not None and label not in wanted:
            continue
        cls, note = resolve_calix(cname)
        if cls is None:
            skipped[label] = note
        else:
            calix_rows.append((label, cls, extra, note))
    peers = [p for p in PEERS if wanted is None or p[0] in wanted]
    unknown = sorted((wanted or set()) - {lab for lab, *_ in CALIX} - {p[0] for p in PEERS})
    if unknown:
        print(f"unknown estimator labels (ignored): {', '.join(unknown)}; labels are "
              + ", ".join([lab for lab, *_ in CALIX] + [p[0] for p in PEERS]))
    print("calix estimators: " + ", ".join(
        f"{lab}{f' [{note}]' if note else ''}" for lab, _, _, note in calix_rows))
    if skipped:
        print("skipped (not in calix.explain): " + "; ".join(
            f"{lab} ({why})" for lab, why in skipped.items()))
    print("peers: " + ", ".join(p[0] for p in peers))
    if any(p[0] == "shap PermutationExplainer" for p in peers):
        _shap_permutation(Counter(lambda z: z.sum(1).astype(float)), 8, 17, 0)  # numba warm-up

    report: dict[str, Any] = {
        "config": {"quick": args.quick, "seeds": list(seeds), "n_inputs": n_inputs,
                   "budget_factors": list(BUDGET_FACTORS),
                   "calix": {lab: {"class": cls.__name__, "extra": extra, "note": note}
                             for lab, cls, extra, note in calix_rows},
                   "skipped": skipped, "peers": [p[0] for p in peers]},
        "games": {}, "results": {}, "seconds": {},
    }
    seconds: dict[str, float] = {}
    width = max([len(lab) for lab, *_ in calix_rows] + [len(p[0]) for p in peers] + [12]) + 2
    width_names = {lab: f"calix {lab}" for lab, *_ in calix_rows}
    width += 6

    for key in keys:
        t_game = time.perf_counter()
        game = _games.build_game(key, n_inputs)
        gap = game.check_pieces(n_coalitions=16)
        phi = game.exact()
        ends = game.ends()
        t_exact = time.perf_counter() - t_game
        d = game.d
        budgets = [f * d for f in BUDGET_FACTORS]
        print(f"\n=== {key}. {game.name}: {game.description}")
        print(f"    d = {d}, {game.n} inputs; exact values of 2^{d} = {2**d} coalitions per "
              f"input in {t_exact:.1f} s (game built, pieces vs value function max gap "
              f"{gap:.1e}); v(full) − v(∅) = " + ", ".join(
                  f"{b - a:+.3f}" for a, b in ends) + "; Σφ² = " + ", ".join(
                  f"{s:.3g}" for s in (phi**2).sum(1)))
        report["games"][key] = {
            "name": game.name, "description": game.description, "d": d, "n_inputs": game.n,
            "budgets": budgets, "exact": phi.tolist(), "v_empty": ends[:, 0].tolist(),
            "v_full": ends[:, 1].tolist(), "pieces_gap": gap, "exact_seconds": t_exact,
            "analytic_max_gap": None if game.analytic() is None
            else float(np.abs(game.analytic() - phi).max())}
        runner = Runner(game, phi)
        rows: dict[str, dict[int, dict[str, Any]]] = {}
        times: dict[str, str] = {}
        jobs: list[tuple[str, Callable[[int, int], tuple], Callable[[int], int]]] = []
        for lab, cls, extra, _ in calix_rows:
            jobs.append((width_names[lab],
                         lambda p, s, cls=cls, extra=extra, r=runner: r.calix(cls, extra, p, s),
                         lambda b: b))
        for lab, run, first in peers:
            jobs.append((lab, lambda p, s, run=run, r=runner: r.peer(run, p, s), first))
        for name, call, first in jobs:
            rows[name] = {}
            t0 = time.perf_counter()
            for b in budgets:
                try:
                    rows[name][b] = runner.cell(call, first(b), b, seeds)
                except Exception as exc:  # an estimator that cannot run at this budget
                    rows[name][b] = {"error": _reason(exc)}
            dt = time.perf_counter() - t0
            seconds[name] = seconds.get(name, 0.0) + dt
            times[name] = f"{dt:.1f}"
        report["results"][key] = {name: {str(b): c for b, c in cells.items()}
                                  for name, cells in rows.items()}

        best = {b: min(_errors(rows, b).values(), default=float("nan")) for b in budgets}
        for cells in rows.values():
            for b, c in cells.items():
                if "nse" in c:
                    c["ratio"] = max(c["nse"], FLOOR) / max(best[b], FLOOR)
        hdr = " ".join(f"{f}d={b}" for f, b in zip(BUDGET_FACTORS, budgets, strict=True))
        print(f"  columns: budgets {hdr}; mean over {game.n} inputs x {len(seeds)} seeds")
        print_table("normalised squared error Σ(φ̂−φ)²/Σφ²", rows, budgets, "nse", "nse", width,
                    times)
        print_table("ratio to the best error at the budget", rows, budgets, "ratio", "ratio",
                    width)
        print_table("Spearman correlation with φ", rows, budgets, "spearman", "corr", width)
        print_table("precision of the top 5 by |φ|", rows, budgets, "precision5", "corr", width)
        if any("coverage" in c for cells in rows.values() for c in cells.values()):
            print_table("interval coverage (fraction of features with φ in [lower, upper])",
                        rows, budgets, "coverage", "corr", width)
            print_table("mean interval width / RMS(φ)", rows, budgets, "width", "corr", width)
        print_table("queries used per input (mean)", rows, budgets, "queries", "queries", width)
        notes = []
        for name, cells in rows.items():
            errs = [(f"{b // d}d", cells[b]["error"]) for b in budgets if "error" in cells[b]]
            if errs:
                notes.append(f"{name} n/a: " + "; ".join(
                    f"{at}: {e}" if i == 0 or e != errs[i - 1][1] else f"{at}: (same)"
                    for i, (at, e) in enumerate(errs)))
            over = [f"{b // d}d" for b, c in cells.items() if c.get("over_budget_runs")]
            if over:
                notes.append(f"{name}: runs over the budget at {', '.join(over)}")
        for line in notes:
            print(f"  note: {line}")
        print(f"  game done in {time.perf_counter() - t_game:.1f} s", flush=True)

    # ------------------------------------------------------------------ summary
    print("\n=== summary: the best estimator per game and budget (lowest mean normalised "
          f"error), calix's default ({DEFAULT}) against it, and the best peer against it")
    dname = f"calix {DEFAULT}"
    summary: dict[str, Any] = {}
    w = max(len(n) for n in [*(f"calix {lab}" for lab, *_ in calix_rows),
                              *(p[0] for p in peers), "best"]) + 2
    print(f"  {'game':<20}{'budget':>7}  {'best':<{w}}{'error':>9}{DEFAULT + '/best':>14}"
          f"{'p':>8}  {'best peer':<{w}}{'peer/best':>10}")
    for key in keys:
        res, d = report["results"][key], report["games"][key]["d"]
        summary[key] = {}
        for f in BUDGET_FACTORS:
            b = str(f * d)
            cand = _errors(res, b)
            if not cand:
                continue
            name = min(cand, key=cand.get)
            dflt = res.get(dname, {}).get(b, {})
            ratio = (max(dflt["nse"], FLOOR) / max(cand[name], FLOOR) if "nse" in dflt
                     else None)
            peer_cand = {n: v for n, v in cand.items() if not n.startswith("calix ")}
            peer = min(peer_cand, key=peer_cand.get) if peer_cand else None
            peer_ratio = (None if peer is None
                          else max(peer_cand[peer], FLOOR) / max(cand[name], FLOOR))
            p = (paired_p(dflt["nse_runs"], res[name][b]["nse_runs"])
                 if "nse" in dflt and name != dname else None)
            summary[key][f"{f}d"] = {"best": name, "nse": cand[name], "default_ratio": ratio,
                                     "default_vs_best_p": p, "best_peer": peer,
                                     "peer_ratio": peer_ratio}
            print(f"  {report['games'][key]['name']:<20}{f'{f}d':>7}  {name:<{w}}"
                  f"{cand[name]:>9.2e}{_fmt(ratio, 'ratio'):>14}"
                  f"{'' if p is None else f'{p:.2g}':>8}  {peer or 'n/a':<{w}}"
                  f"{_fmt(peer_ratio, 'ratio'):>10}")
    print("  p: two-sided Wilcoxon signed-rank test of the default's errors against the best's, "
          "paired by seed and input (where the default is not the best)")
    report["summary"] = summary
    report["worst_ratios"] = worst_ratios(report)

    lev, ker = "calix LeverageSHAP", "calix KernelSHAP"
    print("\n=== Leverage SHAP vs KernelSHAP at 8d (tabular games; normalised error)")
    lines = {}
    for key in [k for k in keys if k in _games.TABULAR]:
        res, d = report["results"][key], report["games"][key]["d"]
        b = str(8 * d)
        vals = {n: res.get(n, {}).get(b, {}).get("nse") for n in (lev, ker, "shapiq KernelSHAP")}
        ratio = (vals[lev] / vals[ker] if vals[lev] is not None and vals[ker] else None)
        lines[key] = {**vals, "leverage_over_kernel": ratio}
        print(f"  {report['games'][key]['name']:<22} 8d={b:>4}: LeverageSHAP "
              f"{_fmt(vals[lev], 'nse')}, KernelSHAP {_fmt(vals[ker], 'nse')}, ratio "
              f"{_fmt(ratio, 'ratio')} (shapiq KernelSHAP "
              f"{_fmt(vals['shapiq KernelSHAP'], 'nse')})")
    report["leverage_vs_kernel_8d"] = lines
    if not args.quick and (wanted is None or {"LeverageSHAP", "KernelSHAP",
                                               "shap KernelExplainer"} <= wanted):
        report["leverage_vs_kernel_8d_more_seeds"] = leverage_vs_kernel(
            leverage_keys, n_inputs)

    print("\n=== wall time per estimator (all games, all budgets and seeds)")
    for name, s in sorted(seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<{width}}{s:8.1f} s")
    total = time.perf_counter() - t_start
    print(f"total {total:.0f} s")
    report["seconds"] = seconds
    report["total_seconds"] = total
    _write_json(args.json, report)
    return report


def worst_ratios(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Print and return every estimator's largest ratio of its mean normalised error to the
    best estimator's, over all games and budgets of ``report`` (a main run's JSON), with the
    cell where it is reached; lowest first. Cells an estimator cannot run are left out."""
    worst: dict[str, dict[str, Any]] = {}
    for key, res in report["results"].items():
        game = report["games"][key]
        for b in map(str, game["budgets"]):
            errs = _errors(res, b)
            if not errs:
                continue
            best = max(min(errs.values()), FLOOR)
            for name, err in errs.items():
                ratio = max(err, FLOOR) / best
                if ratio > worst.get(name, {}).get("ratio", 0.0):
                    worst[name] = {"ratio": ratio, "game": game["name"],
                                   "budget": f"{int(b) // game['d']}d"}
    order = sorted(worst, key=lambda n: worst[n]["ratio"])
    print("\n=== worst ratio to the best error over all games and budgets (lowest first)")
    w = max((len(n) for n in order), default=10) + 2
    for name in order:
        c = worst[name]
        print(f"  {name:<{w}}{_fmt(c['ratio'], 'ratio'):>10}  ({c['game']} {c['budget']})")
    return {name: worst[name] for name in order}


def _write_json(path: str | None, report: dict[str, Any]) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as fh:
            json.dump(report, fh, indent=1, allow_nan=True)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
