"""Observables of the semantic landscape (design: shared/design/landscape-science.md, sections 2-3).

Per run: t_mem / t_g at accuracy thresholds 0.9, 0.95, 0.99 (first checkpoint at or above), test-loss bump
(max test loss between memorisation and grokking minus test loss at memorisation), downhill transitions.
Across runs: grokking probability per data fraction and D_c (logistic fit; midpoint of the gap when the
data are separated), t_g = A (D - D_c)^(-nu) + t0 (scipy curve_fit covariance + bootstrap over runs),
dwell-time tail exponent mu (discrete power-law MLE, xmin by Kolmogorov-Smirnov: Clauset et al. 2009,
via the ``powerlaw`` package), Arrhenius beta (slope of log mean waiting time vs delta F within each source
node, and the conditional-logit MLE on transition counts), barrier heights (minimax path), detour states
(Spearman correlation of a visit with the within-group rank of t_g) and node count vs model size.

``observe_graph`` writes them into the graph's attributes; ``write_observables`` writes
``observables.json`` and ``observables_runs.csv`` next to the graph; ``observe`` recomputes them for an
existing analysis folder (``semgraph observe OUT``).
"""
from __future__ import annotations

import contextlib
import csv
import heapq
import io
import math
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import networkx as nx
import numpy as np
from scipy import optimize, stats

from semgraph.errors import SemgraphError
from semgraph.io import atomic_path, atomic_write_json
from semgraph.landscape import visits

THRESHOLDS = (0.9, 0.95, 0.99)
GROK_THRESHOLD = 0.95
F_KEY = "F_test_mean"


# ----------------------------------------------------------------------------------------------- per run
def first_step(rows: Sequence[dict[str, Any]], key: str, threshold: float) -> int | None:
    """First step (rows of one run) whose ``key`` is >= threshold, or None."""
    for r in sorted(rows, key=lambda r: r["step"]):
        v = r.get(key)
        if v is not None and v != "" and float(v) >= threshold:
            return int(r["step"])
    return None


def loss_bump(rows: Sequence[dict[str, Any]], t_mem: int | None, t_g: int | None,
                   key: str = "output.test_loss") -> float | None:
    """max test loss over [t_mem, t_g] (or to the end) minus test loss at t_mem; None before memorisation."""
    if t_mem is None:
        return None
    seq = [(int(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
    seq.sort()
    at = [v for s, v in seq if s == t_mem]
    window = [v for s, v in seq if s >= t_mem and (t_g is None or s <= t_g)]
    return None if not at or not window else float(max(window) - at[0])


def run_table(G: nx.DiGraph, rows: Sequence[dict[str, Any]], F_key: str = F_KEY) -> list[dict[str, Any]]:
    """One record per run: metadata, t_mem / t_g at each threshold, bump, path, downhill transitions."""
    by_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_run[str(r["run"])].append(r)
    out = []
    for run in sorted(by_run):
        rr = by_run[run]
        meta = run_metadata(G, run)
        rec: dict[str, Any] = {"run": run, **meta, "last_step": max(int(r["step"]) for r in rr)}
        for a in THRESHOLDS:
            rec[f"t_mem_{a}"] = first_step(rr, "output.train_acc", a)
            rec[f"t_g_{a}"] = first_step(rr, "output.test_acc", a)
        t_mem = rec["t_mem_0.99"] if rec["t_mem_0.99"] is not None else rec["t_mem_0.9"]
        rec["test_loss_bump"] = loss_bump(rr, t_mem, rec[f"t_g_{GROK_THRESHOLD}"])
        rec["grokked"] = rec[f"t_g_{GROK_THRESHOLD}"] is not None
        if run in G.graph.get("trajectories", {}):
            path = [v["node"] for v in visits([(int(s), n) for s, n in G.graph["trajectories"][run]])]
            rec["path"] = " -> ".join(path)
            F = [G.nodes[n].get(F_key) for n in path]
            rec["downhill_transitions"] = sum(1 for a, b in zip(F, F[1:]) if a is not None and b is not None
                                              and b < a)
            rec["transitions"] = len(path) - 1
        out.append(rec)
    return out


def run_metadata(G: nx.DiGraph, run: str) -> dict[str, Any]:
    """seed, data fraction, model size (d_model) and p from the run's recorded metadata."""
    info = G.graph.get("run_info", {}).get(run, {})
    meta = info.get("metadata", {}) or {}
    recipe = meta.get("recipe", {}) or {}
    task = info.get("task") or {}
    return {"seed": meta.get("seed", recipe.get("seed", task.get("seed"))),
            "train_fraction": meta.get("train_fraction", recipe.get("train_fraction", task.get("train_fraction"))),
            "d_model": recipe.get("d_model"), "p": meta.get("p", task.get("p"))}


# --------------------------------------------------------------------------------- grokking vs data size
def grokking_probability(runs: Sequence[dict[str, Any]], key: str = "train_fraction") -> dict[str, Any]:
    """Fraction of runs that grok within budget per data fraction, and D_c from a logistic fit."""
    groups: dict[float, list[bool]] = defaultdict(list)
    for r in runs:
        if r.get(key) is not None:
            groups[float(r[key])].append(bool(r["grokked"]))
    table = {str(d): {"runs": len(g), "grokked": int(sum(g)), "probability": float(np.mean(g))}
             for d, g in sorted(groups.items())}
    D = np.array([float(r[key]) for r in runs if r.get(key) is not None])
    y = np.array([bool(r["grokked"]) for r in runs if r.get(key) is not None])
    return {"by_fraction": table, **estimate_dc(D, y)}


def estimate_dc(D: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """D_c = midpoint of a logistic P(grok | D) = 1 / (1 + exp(-(D - D_c) / w)), fitted by maximum likelihood.

    When the outcomes are separated (every grokking D above every non-grokking D), the likelihood has no
    maximum: D_c is then the midpoint of the gap and the gap is its interval.
    """
    if len(D) == 0 or y.all() or not y.any():
        why = ("no run records its data fraction (run metadata 'train_fraction')" if len(D) == 0
               else "every run grokked" if y.all() else "no run grokked")
        return {"D_c": None, "D_c_interval": None, "D_c_method": f"not identifiable: {why}"}
    lo, hi = float(D[~y].max()), float(D[y].min())
    if lo < hi:
        return {"D_c": (lo + hi) / 2, "D_c_interval": [lo, hi], "D_c_method": "separated outcomes: gap midpoint"}

    def nll(theta: np.ndarray) -> float:
        dc, logw = theta
        z = (D - dc) / math.exp(logw)
        return float(np.sum(np.logaddexp(0, -z) * y + np.logaddexp(0, z) * (~y)))

    res = optimize.minimize(nll, x0=[float(np.median(D)), math.log(max(np.std(D), 1e-3))], method="Nelder-Mead")
    dc = float(res.x[0])
    try:
        H = _numeric_hessian(nll, res.x)
        se = float(math.sqrt(np.linalg.inv(H)[0, 0]))
    except (np.linalg.LinAlgError, ValueError):
        se = None
    width = float(math.exp(res.x[1]))
    grid = np.unique(D)
    if len(grid) > 1 and width < np.diff(grid).min() / 10:
        # quasi-separation (e.g. 0/4, 2/4, 4/4): the likelihood keeps rising as the curve steepens, so the
        # Hessian-based interval collapses to nothing; the data place D_c only between neighbouring fractions
        tol = 1e-9 * max(1.0, abs(dc))
        below, above = grid[grid < dc - tol], grid[grid > dc + tol]
        return {"D_c": dc, "D_c_interval": [float(below.max()) if len(below) else None,
                                             float(above.min()) if len(above) else None],
                "D_c_width": width, "D_c_method": "logistic maximum likelihood; steeper than the fractions "
                "resolve, so the interval is the neighbouring fractions"}
    return {"D_c": dc, "D_c_interval": None if se is None else [dc - 1.96 * se, dc + 1.96 * se],
            "D_c_width": width, "D_c_method": "logistic maximum likelihood (95% Wald)"}


def _numeric_hessian(f, x: np.ndarray, h: float = 1e-4) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    n = len(x)
    H = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            e_i, e_j = np.eye(n)[i] * h, np.eye(n)[j] * h
            H[i, j] = (f(x + e_i + e_j) - f(x + e_i - e_j) - f(x - e_i + e_j) + f(x - e_i - e_j)) / (4 * h * h)
    return H


def fit_tg_divergence(D: np.ndarray, tg: np.ndarray, D_c: float | None, *, n_boot: int = 200,
                      seed: int = 0, D_c_floor: float | None = None) -> dict[str, Any]:
    """Fit t_g = A (D - D_c)^(-nu) + t0 on grokked runs.

    Free parameters depend on how many distinct D there are: >= 5: A, D_c, nu, t0; 3-4: A, nu, t0 with D_c
    fixed (from the grokking-probability fit); 2: A, nu with D_c fixed and t0 = 0. A fitted D_c always lies
    below the smallest grokked D (t_g must stay finite there) and above ``D_c_floor`` (the largest D at which
    no run grokked, when given). The grokking-probability D_c is the 50% point at a finite step budget, so it
    can lie at or above a grokked D; with 3-4 fractions D_c is then fitted in that window instead, with
    t0 = 0 (A, D_c, nu). Uncertainty: curve_fit's covariance and a bootstrap over runs (percentile 95%
    interval of nu).
    """
    D, tg = np.asarray(D, float), np.asarray(tg, float)
    n_distinct = len(np.unique(D))
    if n_distinct < 2:
        return {"nu": None, "reason": f"needs grokked runs at >= 2 data fractions, got {n_distinct}"}
    if D_c is None and n_distinct < 5:
        return {"nu": None, "reason": "D_c unknown (no fraction failed to grok) and < 5 fractions to fit it"}
    # D at D_c (to rounding: a logistic D_c lands on a fraction under quasi-separation) makes t_g infinite
    consistent = D_c is not None and bool(np.all(D > D_c + 1e-6 * max(1.0, abs(D_c))))
    if n_distinct >= 5:
        free = "A,D_c,nu,t0"
    elif n_distinct >= 3:
        free = "A,nu,t0" if consistent else "A,D_c,nu"
    else:
        free = "A,nu"
    floor = -np.inf if D_c_floor is None or D_c_floor >= D.min() else float(D_c_floor)

    def fit(Dx: np.ndarray, tx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            top = Dx.min() - 1e-6
            dc0 = D_c if (D_c is not None and floor < D_c < top) else \
                (Dx.min() - 0.05 if not np.isfinite(floor) else (floor + top) / 2)
            if free == "A,D_c,nu,t0":
                f = lambda d, A, dc, nu, t0: A * np.maximum(d - dc, 1e-9) ** (-nu) + t0  # noqa: E731
                p0 = [float(np.median(tx)) * 0.1, dc0, 1.0, 0.0]
                bounds = ([0, floor, 0, -np.inf], [np.inf, top, 10, np.inf])
            elif free == "A,D_c,nu":
                f = lambda d, A, dc, nu: A * np.maximum(d - dc, 1e-9) ** (-nu)  # noqa: E731
                p0, bounds = [float(np.median(tx)) * 0.1, dc0, 1.0], ([0, floor, 0], [np.inf, top, 10])
            elif free == "A,nu,t0":
                f = lambda d, A, nu, t0: A * (d - D_c) ** (-nu) + t0  # noqa: E731
                p0, bounds = [float(np.median(tx)) * 0.1, 1.0, 0.0], ([0, 0, -np.inf], [np.inf, 10, np.inf])
            else:
                f = lambda d, A, nu: A * (d - D_c) ** (-nu)  # noqa: E731
                p0, bounds = [float(np.median(tx)) * 0.1, 1.0], ([0, 0], [np.inf, 10])
            return optimize.curve_fit(f, Dx, tx, p0=p0, bounds=bounds, maxfev=5000)

    if free == "A,nu" and not consistent:
        return {"nu": None, "reason": f"a grokked run has D <= D_c = {D_c:.3g}"}
    try:
        popt, pcov = fit(D, tg)
    except (RuntimeError, ValueError) as exc:
        return {"nu": None, "reason": f"curve_fit failed: {exc}"}
    names = free.split(",")
    se = np.sqrt(np.clip(np.diag(pcov), 0, None))
    out: dict[str, Any] = {"free_parameters": names, "D_c_fixed": None if "D_c" in names else D_c,
                           "t0_fixed": None if "t0" in names else 0.0, "D_c_floor": D_c_floor}
    for n_, v, s in zip(names, popt, se):
        out[n_] = float(v)
        out[f"{n_}_se"] = float(s) if np.isfinite(s) else None
    rng = np.random.default_rng(seed)
    nus = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(D), len(D))
        if len(np.unique(D[idx])) < {2: 2, 3: 3, 4: 5}[len(names)] + (names == ["A", "D_c", "nu"]):
            continue
        try:
            p, _ = fit(D[idx], tg[idx])
            nus.append(p[names.index("nu")])
        except (RuntimeError, ValueError):
            continue
    out["nu_bootstrap_95"] = [float(np.percentile(nus, 2.5)), float(np.percentile(nus, 97.5))] if nus and len(nus) >= min(20, n_boot // 2) \
        else None
    if "D_c" in out:  # pinned to an edge of its window: the data do not locate D_c inside it
        out["D_c_at_bound"] = bool(abs(out["D_c"] - floor) < 1e-4 or abs(out["D_c"] - (D.min() - 1e-6)) < 1e-4)
    out["n_runs"] = int(len(D))
    out["n_fractions"] = int(n_distinct)
    return out


def _tg_fit(runs: Sequence[dict[str, Any]], D_c: float | None) -> dict[str, Any]:
    """The divergence fit on the grokked runs of ``runs``, D_c kept above the largest never-grokking D."""
    done = [r for r in runs if r["grokked"] and r.get("train_fraction") is not None]
    lowest = min((float(r["train_fraction"]) for r in done), default=None)
    never = [float(r["train_fraction"]) for r in runs if r.get("train_fraction") is not None
             and lowest is not None and float(r["train_fraction"]) < lowest]
    return fit_tg_divergence(np.array([r["train_fraction"] for r in done], dtype=float),
                             np.array([r[f"t_g_{GROK_THRESHOLD}"] for r in done], dtype=float), D_c,
                             D_c_floor=max(never) if never else None)


# --------------------------------------------------------------------------------------- dwell and tails
def dwell_times(G: nx.DiGraph) -> np.ndarray:
    """Uncensored stay lengths (steps) pooled over runs."""
    out = []
    for run, path in G.graph.get("trajectories", {}).items():
        out += [v["exit"] - v["entry"] for v in visits([(int(s), n) for s, n in path]) if not v["censored"]]
    return np.array(out, dtype=float)


def tail_exponent(x: Sequence[float], *, xmin: float | None = None, discrete: bool | None = None
                  ) -> dict[str, Any]:
    """mu of psi(tau) ~ tau^-(1 + mu) by maximum likelihood (powerlaw package: alpha = 1 + mu)."""
    x = np.asarray([v for v in x if v > 0], dtype=float)
    if len(x) < 10:
        return {"mu": None, "reason": f"needs >= 10 positive dwell times, got {len(x)}", "n": int(len(x))}
    if discrete is None:
        discrete = bool(np.all(x == np.round(x)))
    import powerlaw

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        fit = powerlaw.Fit(x, discrete=discrete, xmin=xmin, verbose=False)
        alpha, sigma, xm = float(fit.power_law.alpha), float(fit.power_law.sigma), float(fit.power_law.xmin)
    n_tail = int(np.sum(x >= xm))
    return {"mu": alpha - 1.0, "mu_se": sigma, "xmin": xm, "n_tail": n_tail, "n": int(len(x)),
            "discrete": discrete, "method": "power-law MLE, xmin by KS (Clauset et al. 2009; powerlaw package)"}


# ------------------------------------------------------------------------------------------- Arrhenius
def arrhenius(G: nx.DiGraph, F_key: str = F_KEY) -> dict[str, Any]:
    """beta from waiting times vs delta F = F_target - F_source.

    ``beta``: count-weighted least squares slope of log(mean waiting time) on delta F with one intercept per
    source node (tau0_ij may differ by source; only sources with >= 2 observed out-edges inform the slope).
    ``beta_mle``: conditional-logit maximum likelihood of the jump counts, P(i->j) ∝ exp(-beta delta F_ij).
    ``beta_pooled``: plain slope over all edges (the paper's plot; biased when tau0 differs by source).
    """
    edges = []
    for u, w, d in G.edges(data=True):
        fu, fw = G.nodes[u].get(F_key), G.nodes[w].get(F_key)
        if fu is None or fw is None or not d.get("mean_waiting_time"):
            continue
        edges.append((u, float(fw - fu), int(d["count"]), float(d["mean_waiting_time"])))
    by_src: dict[str, list[tuple[float, int, float]]] = defaultdict(list)
    for u, dF, n, wt in edges:
        by_src[u].append((dF, n, wt))
    groups = {u: e for u, e in by_src.items() if len(e) >= 2 and len({x[0] for x in e}) >= 2}
    out: dict[str, Any] = {"F_key": F_key, "n_edges": len(edges), "n_sources_used": len(groups)}
    if not groups:
        out.update(beta=None, reason="no source node with >= 2 out-edges of different delta F")
        return out
    xs, ys, ws = [], [], []
    for e in groups.values():
        dF = np.array([x[0] for x in e])
        n = np.array([x[1] for x in e], float)
        lw = np.log([x[2] for x in e])
        mx, my = np.average(dF, weights=n), np.average(lw, weights=n)
        xs += list(dF - mx)
        ys += list(lw - my)
        ws += list(n)
    xs, ys, ws = map(np.asarray, (xs, ys, ws))
    beta = float(np.sum(ws * xs * ys) / np.sum(ws * xs * xs))
    resid = ys - beta * xs
    dof = max(1, len(xs) - len(groups) - 1)
    se = float(math.sqrt(np.sum(ws * resid ** 2) / dof / np.sum(ws * xs * xs)))
    out.update(beta=beta, beta_se=se)

    def nll(b: float) -> float:
        total = 0.0
        for e in groups.values():
            dF = np.array([x[0] for x in e])
            n = np.array([x[1] for x in e], float)
            total -= float(np.sum(n * (-b * dF)) - n.sum() * np.log(np.sum(np.exp(-b * dF))))
        return total

    res = optimize.minimize_scalar(nll, bounds=(-50, 50), method="bounded")
    h = 1e-4
    curv = (nll(res.x + h) - 2 * nll(res.x) + nll(res.x - h)) / h ** 2
    out.update(beta_mle=float(res.x), beta_mle_se=float(1 / math.sqrt(curv)) if curv > 0 else None)
    all_dF = np.array([e[1] for e in edges])
    all_lw = np.log([e[3] for e in edges])
    if len(edges) >= 2 and np.ptp(all_dF) > 0:
        out["beta_pooled"] = float(stats.linregress(all_dF, all_lw).slope)
    out["edges"] = [{"source": u, "delta_F": dF, "count": n, "mean_waiting_time": wt} for u, dF, n, wt in edges]
    return out


# ------------------------------------------------------------------------------------------- barriers
def minimax_barriers(G: nx.DiGraph, F_key: str = F_KEY) -> dict[str, dict[str, float]]:
    """barrier[i][j] = min over directed paths i -> j of (max F along the path) - F_i (reachable pairs only)."""
    F = {n: G.nodes[n].get(F_key) for n in G.nodes}
    out: dict[str, dict[str, float]] = {}
    for src in G.nodes:
        if F[src] is None:
            continue
        best = {src: F[src]}
        heap = [(F[src], src)]
        while heap:
            peak, u = heapq.heappop(heap)
            if peak > best.get(u, math.inf):
                continue
            for w in G.successors(u):
                if F[w] is None:
                    continue
                p = max(peak, F[w])
                if p < best.get(w, math.inf):
                    best[w] = p
                    heapq.heappush(heap, (p, w))
        out[src] = {dst: float(p - F[src]) for dst, p in best.items() if dst != src}
    return out


# ------------------------------------------------------------------------------------ detours and size
def detour_states(G: nx.DiGraph, runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per node: Spearman correlation between visiting it and a slower t_g, ranked within groups of equal
    (data fraction, size) so the data fraction does not confound; runs that never grok rank last."""
    key = f"t_g_{GROK_THRESHOLD}"
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        groups[(r.get("train_fraction"), r.get("d_model"))].append(r)
    slowness: dict[str, float] = {}
    for members in groups.values():
        t = np.array([math.inf if m[key] is None else m[key] for m in members], dtype=float)
        ranks = stats.rankdata(t)
        for m, rk in zip(members, ranks):
            slowness[m["run"]] = float((rk - 1) / (len(members) - 1)) if len(members) > 1 else 0.5
    out = {}
    run_names = [r["run"] for r in runs]
    for n in G.nodes:
        visited = np.array([r in G.nodes[n].get("runs", []) for r in run_names], dtype=float)
        s = np.array([slowness[r] for r in run_names])
        if visited.min() == visited.max() or np.ptp(s) == 0:
            out[n] = {"rho": None, "p": None, "detour": False, "visit_fraction": float(visited.mean())}
            continue
        rho, p = stats.spearmanr(visited, s)
        out[n] = {"rho": float(rho), "p": float(p), "detour": bool(rho > 0 and p < 0.1),
                  "visit_fraction": float(visited.mean())}
    return out


def nodes_by_size(G: nx.DiGraph, runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per model size: number of distinct nodes visited, and per node the fraction of runs visiting it."""
    by_size: dict[Any, list[str]] = defaultdict(list)
    for r in runs:
        by_size[r.get("d_model")].append(r["run"])
    out = {}
    for size, names in sorted(by_size.items(), key=lambda kv: (kv[0] is None, kv[0])):
        visit = {n: float(np.mean([r in G.nodes[n].get("runs", []) for r in names])) for n in G.nodes}
        out[str(size)] = {"runs": len(names), "node_count": int(sum(v > 0 for v in visit.values())),
                          "visit_fraction": visit}
    return out


# ----------------------------------------------------------------------------------------------- all
def compute_observables(G: nx.DiGraph, rows: Sequence[dict[str, Any]], F_key: str = F_KEY) -> dict[str, Any]:
    runs = run_table(G, rows, F_key)
    grok = grokking_probability(runs)
    tg_fit = _tg_fit(runs, grok.get("D_c"))
    sizes = sorted({r.get("d_model") for r in runs if r.get("d_model") is not None})
    tg_fit_by_size = {}
    if len(sizes) > 1:  # pooled sizes mix different t_g(D) curves: fit each size on its own too
        for size in sizes:
            sub = [r for r in runs if r.get("d_model") == size]
            tg_fit_by_size[str(size)] = _tg_fit(sub, grokking_probability(sub).get("D_c"))
    dw = dwell_times(G)
    return {
        "grok_threshold": GROK_THRESHOLD,
        "runs": runs,
        "grokking_probability": grok,
        "t_g_fit": tg_fit,
        "t_g_fit_by_size": tg_fit_by_size,
        "dwell": {"n": int(len(dw)), "median": float(np.median(dw)) if len(dw) else None,
                  "values": dw.tolist(), **tail_exponent(dw)},
        "arrhenius": arrhenius(G, F_key),
        "barriers": minimax_barriers(G, F_key),
        "detours": detour_states(G, runs),
        "nodes_by_size": nodes_by_size(G, runs),
    }


def observe_graph(G: nx.DiGraph, rows: Sequence[dict[str, Any]], F_key: str = F_KEY) -> dict[str, Any]:
    """Compute the observables and put them into ``G``'s graph and node attributes."""
    obs = compute_observables(G, rows, F_key)
    grok, fit, arr, dw = obs["grokking_probability"], obs["t_g_fit"], obs["arrhenius"], obs["dwell"]
    G.graph.update({
        "grokking_probability_by_fraction": {d: v["probability"] for d, v in grok["by_fraction"].items()},
        "D_c": grok.get("D_c"), "D_c_interval": grok.get("D_c_interval"),
        "t_g_nu": fit.get("nu"), "t_g_nu_se": fit.get("nu_se"), "t_g_nu_bootstrap_95": fit.get("nu_bootstrap_95"),
        "t_g_fit": {k: v for k, v in fit.items()},
        "t_g_nu_by_size": {size: f.get("nu") for size, f in obs["t_g_fit_by_size"].items()},
        "dwell_mu": dw.get("mu"), "dwell_mu_se": dw.get("mu_se"), "dwell_xmin": dw.get("xmin"),
        "arrhenius_beta": arr.get("beta"), "arrhenius_beta_se": arr.get("beta_se"),
        "arrhenius_beta_mle": arr.get("beta_mle"),
        "node_count_by_size": {s: v["node_count"] for s, v in obs["nodes_by_size"].items()},
        "t_g_by_run": {r["run"]: r[f"t_g_{GROK_THRESHOLD}"] for r in obs["runs"]},
        "t_mem_by_run": {r["run"]: r["t_mem_0.99"] for r in obs["runs"]},
        "test_loss_bump_by_run": {r["run"]: r["test_loss_bump"] for r in obs["runs"]},
    })
    lowest = min((n for n in G.nodes if G.nodes[n].get(F_key) is not None),
                 key=lambda n: G.nodes[n][F_key], default=None)
    for n in G.nodes:
        d = obs["detours"].get(n, {})
        values = dict(detour=d.get("detour", False), detour_rho=d.get("rho"), detour_p=d.get("p"),
                      visit_fraction=d.get("visit_fraction"),
                      barrier_to_lowest_F=obs["barriers"].get(n, {}).get(lowest) if lowest != n else 0.0)
        # not computed = absent (as in every export format), not None
        G.nodes[n].update({k: v for k, v in values.items() if v is not None})
    for u, w, d in G.edges(data=True):
        d["barrier"] = obs["barriers"].get(u, {}).get(w)
    return obs


def write_observables(obs: dict[str, Any], out: str | Path) -> dict[str, Path]:
    out = Path(out)
    files = {"observables": out / "observables.json", "observables_runs": out / "observables_runs.csv"}
    atomic_write_json(files["observables"], obs)
    keys: list[str] = []
    for r in obs["runs"]:
        keys += [k for k in r if k not in keys]
    with atomic_path(files["observables_runs"]) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for r in obs["runs"]:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in keys})
    return files


def observe(out: str | Path, F_key: str = F_KEY) -> tuple[dict[str, Any], dict[str, Path]]:
    """Recompute the observables of an analysis folder (landscape.json + checkpoints.csv) and rewrite them."""
    from semgraph.export import decode_json_text, read_graph, write_graph

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SemgraphError("is a file, not an analysis folder", path=out, stage="observe",
                            fix="pass the --out folder of `semgraph analyze`")
    graph_file, table = out / "landscape.json", out / "checkpoints.csv"
    for f in (graph_file, table):
        if not f.exists():
            raise SemgraphError("analysis file missing", path=f, stage="observe",
                                fix="run `semgraph analyze RUN_DIR --out OUT` first")
    G = read_graph(graph_file)
    decode_json_text(G.graph)
    rerun = f"re-run `semgraph analyze RUN_DIR --out {out}` to rewrite it"
    try:
        with open(table, encoding="utf-8", newline="") as fh:
            rows = [{k: _num(v) for k, v in r.items()} for r in csv.DictReader(fh)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise SemgraphError(f"checkpoints table is unreadable ({exc})", path=table, stage="observe", fix=rerun) from exc
    if not rows or not {"run", "step", "node"} <= set(rows[0]):
        raise SemgraphError("checkpoints table has no rows with run, step and node columns", path=table,
                            stage="observe", fix=rerun)
    from semgraph.outputs import MIXED, mismatches
    problems = mismatches(G, rows, trajectories=G.graph.get("trajectories"))
    if problems:
        raise SemgraphError(f"{'; '.join(problems)} ({MIXED})", path=out, stage="observe",
                            fix=f"re-run `semgraph analyze RUN_DIR --out {out}`")
    obs = observe_graph(G, rows, F_key)
    files = write_observables(obs, out)
    for fmt, suffix in (("graphml", ".graphml"), ("gexf", ".gexf"), ("json", ".json")):
        files[fmt] = write_graph(G, out / f"landscape{suffix}", fmt)
    return obs, files


def _num(v: str) -> Any:
    if v == "":
        return None
    try:
        return int(v)
    except ValueError:
        try:
            return float(v)
        except ValueError:
            return v


def summary_lines(obs: dict[str, Any]) -> list[str]:
    """A few human-readable lines for the CLI."""
    g, f, d, a = obs["grokking_probability"], obs["t_g_fit"], obs["dwell"], obs["arrhenius"]
    lines = ["grokking probability (test acc >= %.2f) by data fraction: " % obs["grok_threshold"] + (", ".join(
        f"{k}: {v['grokked']}/{v['runs']}" for k, v in g["by_fraction"].items()) or "no data fractions recorded")]
    dc, iv = g.get("D_c"), g.get("D_c_interval")
    lines.append(f"D_c = {'none' if dc is None else f'{dc:.3g}'} ({g.get('D_c_method')}; interval "
                 f"{None if iv is None else [None if v is None else round(v, 4) for v in iv]})")
    for name, fit in [("", f)] + [(f" (d_model {k})", v) for k, v in obs.get("t_g_fit_by_size", {}).items()]:
        if fit.get("nu") is not None:
            dc = (f", D_c = {fit['D_c']:.3g}" + (" (at the edge of its window)" if fit.get("D_c_at_bound") else "")
                  if "D_c" in fit["free_parameters"] else "")
            lines.append(f"t_g = A (D - D_c)^-nu + t0{name}: nu = {fit['nu']:.3g} ± "
                         f"{fit.get('nu_se') or float('nan'):.2g}{dc} (bootstrap 95% {fit.get('nu_bootstrap_95')}; "
                         f"free {','.join(fit['free_parameters'])})")
        else:
            lines.append(f"t_g fit{name}: {fit.get('reason')}")
    for size, v in obs.get("nodes_by_size", {}).items():
        if len(obs["nodes_by_size"]) > 1:
            lines.append(f"d_model {size}: {v['runs']} runs visit {v['node_count']} nodes")
    lines.append(f"dwell tail mu = {d.get('mu')} (n = {d.get('n')}, xmin = {d.get('xmin')})" if d.get("mu") is not None
                 else f"dwell tail: {d.get('reason')}")
    lines.append(f"Arrhenius beta = {a.get('beta')} (MLE {a.get('beta_mle')}, pooled {a.get('beta_pooled')})"
                 if a.get("beta") is not None else f"Arrhenius: {a.get('reason')}")
    for r in obs["runs"]:
        lines.append(f"  run {r['run']}: D = {r.get('train_fraction')}, seed {r.get('seed')}: t_mem {r['t_mem_0.99']}, "
                     f"t_g(0.9/0.95/0.99) {r['t_g_0.9']}/{r['t_g_0.95']}/{r['t_g_0.99']}, bump "
                     f"{r['test_loss_bump'] if r['test_loss_bump'] is None else round(r['test_loss_bump'], 3)}")
    return lines


__all__ = ["compute_observables", "observe_graph", "write_observables", "observe", "tail_exponent", "arrhenius",
           "minimax_barriers", "fit_tg_divergence", "estimate_dc", "grokking_probability"]
