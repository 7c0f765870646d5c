"""The pictures of the intervention studies (issue 22), one PNG beside each `<name>_<kind>.json`, drawn from the
JSON alone (display only: nothing here changes the numbers).

- sufficiency: accuracy per question class of the baseline, the circuit kept, random sets of its size, the
  complement replaced, every node replaced and the untrained twin, with their 95% intervals as error bars;
- patch: per answer digit (rows) the excess flip rate of every node (columns), test minus matched null;
- probe: balanced accuracy per variable (rows) and site (columns), and the transfer matrix of one variable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DPI = 100
SUFFICIENCY_FIGURES = ("baseline", "circuit", "random_circuits", "complement", "empty", "untrained_twin")


def _nan(v) -> float:
    return float("nan") if v is None else float(v)


def _sufficiency(fig, result: dict) -> None:
    ax = fig.add_subplot(1, 1, 1)
    classes = list(result["baseline"])
    width = 0.8 / max(len(classes), 1)
    xs = np.arange(len(SUFFICIENCY_FIGURES))
    for j, cls in enumerate(classes):
        acc = np.array([_nan(result[f].get(cls, {}).get("accuracy")) for f in SUFFICIENCY_FIGURES])
        lo = np.array([_nan((result[f].get(cls, {}).get("interval") or [None])[0]) for f in SUFFICIENCY_FIGURES])
        hi = np.array([_nan((result[f].get(cls, {}).get("interval") or [None, None])[1]) for f in SUFFICIENCY_FIGURES])
        err = np.nan_to_num(np.stack([acc - lo, hi - acc]).clip(min=0))
        ax.bar(xs + j * width, np.nan_to_num(acc), width, yerr=err, label=cls, capsize=2)
    ax.set_xticks(xs + width * (len(classes) - 1) / 2, [f.replace("_", " ") for f in SUFFICIENCY_FIGURES])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy (95% interval)")
    ax.set_title(
        f"{result['model']}: circuit sufficiency ({result['replace']} replacement, {len(result['nodes'])} nodes)"
    )
    ax.legend(loc="upper right")


def _heat(fig, ax, grid: np.ndarray, rows: list[str], cols: list[str], title: str, label: str, vmin, vmax):
    im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_yticks(range(len(rows)), rows)
    step = max(1, len(cols) // 40)
    ax.set_xticks(range(0, len(cols), step), cols[::step], rotation=90, fontsize=6)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label=label)


def _patch(fig, result: dict) -> None:
    ax = fig.add_subplot(1, 1, 1)
    digits = list(result["digits"])
    nodes = [r["node"] for r in result["digits"][digits[0]]["nodes"]] if digits else []
    grid = np.array(
        [[_nan(r.get("excess", r.get("rate"))) for r in result["digits"][d]["nodes"]] for d in digits]
    ).reshape(len(digits), len(nodes))
    _heat(fig, ax, grid, digits, nodes, f"{result['model']}: flip rate minus matched null", "excess flip rate", -1, 1)


def _probe(fig, result: dict) -> None:
    variables = list(result["variables"])
    sites = result["sites"]
    grid = np.array([[_nan(r["accuracy"]) for r in result["variables"][v]] for v in variables])
    _heat(fig, fig.add_subplot(2, 1, 1), grid, variables, sites, f"{result['model']}: probes", "balanced acc", 0, 1)
    t = result["transfer"]
    matrix = np.array([[_nan(v) for v in row] for row in t["matrix"]])
    _heat(fig, fig.add_subplot(2, 1, 2), matrix, t["sites"], t["sites"], f"transfer of {t['variable']}", "", 0, 1)


def draw(result: dict, path: str | Path) -> Path:
    """Draw the study `result` (a `<name>_<kind>.json` dict) into the PNG `path`; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    kind = result["kind"]
    height = 9 if kind == "probe" else 5
    width = 10 if kind == "sufficiency" else max(10, 0.12 * len(result.get("sites", [])) + 4)
    if kind == "patch" and result["digits"]:
        width = max(10, 0.1 * len(next(iter(result["digits"].values()))["nodes"]) + 4)
    fig = Figure(figsize=(min(width, 60), height), dpi=DPI)
    {"sufficiency": _sufficiency, "patch": _patch, "probe": _probe}[kind](fig, result)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png", metadata={"Software": None})
    return path
