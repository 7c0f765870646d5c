"""The model zoo: the two Hub layouts a model's files come in, finding models in folders of either, and the zoo
table (one row per model) written as Markdown, CSV and a picture.

Two layouts (docs: upstream spec 14.1), the same content under other names:

- flat (legacy; our run folders and hub folders): `<name>.pth`, `<name>_train.json`, `<name>_behavior.json`,
  `<name>_maths.json`, `<name>_accuracy.json`, `<name>_quanta_<view>.svg/.png`; a folder may hold several models
  (the legacy repository holds 48).
- per model (repository `QuantaMaths_<name>`): `model.pth`, `training_loss.json`, `behaviors.json` (every tag that
  is not `Algo:`), `features.json` (only `Algo:` tags, every useful node listed, also those with no tag),
  `accuracy.json`, `quanta_<view>.svg/.png`; one model per folder, named by its `manifest.json`, its
  training json's `model_name`, or the folder's name.

Both may hold a model card `README.md` and `manifest.json` (then the folder is a hub folder). The zoo table gives,
per model: per question class (ADD, SUB, NEG; analysis.accuracy) the questions tested and failed, failures per
million and the exact one-sided 95% upper bound on the failure rate (analysis.accuracy.binomial_upper_bound);
useful heads and MLPs (behaviour file); nodes with an `Algo` tag (maths file); the final training loss (train json
of any era, arith.weights.read_train_json); and the stages whose artifacts exist. The same files give the same
row whichever layout or folder they were read from. Only arith and analysis are imported (the layers rule).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from arith.errors import InputError
from arith.names import parse_name

FLAT, PER_MODEL = "flat", "per-model"
LAYOUTS = (FLAT, PER_MODEL)
PER_MODEL_PREFIX = "QuantaMaths_"  # the published per-model repositories: OWNER/QuantaMaths_<name>
CARD = "README.md"
MANIFEST = "manifest.json"
KINDS = ("weights", "train", "behavior", "maths", "accuracy")  # the artifacts, in the order stages make them
_FLAT_SUFFIX = {
    "weights": ".pth",
    "train": "_train.json",
    "behavior": "_behavior.json",
    "maths": "_maths.json",
    "accuracy": "_accuracy.json",
}
_PER_MODEL = {
    "weights": "model.pth",
    "train": "training_loss.json",
    "behavior": "behaviors.json",
    "maths": "features.json",
    "accuracy": "accuracy.json",
}
PICTURE = "quanta_"  # a picture's kind is `quanta_<view><ext>` (analysis.quanta.map_paths without the model name)
PICTURE_SUFFIXES = (".svg", ".png")
STAGES = (("train", ("weights", "train")), ("verify", ("accuracy",)), ("ablate", ("behavior",)), ("algo", ("maths",)))
SKIP_DIRS = ("checkpoints", ".submitit")
CLASSES = ("ADD", "SUB", "NEG")


# ------------------------------------------------------------------------------------------------ layouts


@dataclass(frozen=True)
class HubLayout:
    """How one layout names a model's files: `file(model, kind)` for an artifact kind (KINDS) or a picture kind
    (`quanta_<view>.png`); `kind_of(model, file)` the other way (None for a file of no kind)."""

    name: str

    def file(self, model: str, kind: str) -> str:
        if kind.startswith(PICTURE):
            return f"{model}_{kind}" if self.name == FLAT else kind
        return f"{model}{_FLAT_SUFFIX[kind]}" if self.name == FLAT else _PER_MODEL[kind]

    def kind_of(self, model: str, file: str) -> str | None:
        for kind in KINDS:
            if self.file(model, kind) == file:
                return kind
        bare = file.removeprefix(f"{model}_") if self.name == FLAT and file.startswith(f"{model}_") else None
        bare = file if self.name == PER_MODEL else bare
        if bare and bare.startswith(PICTURE) and bare.endswith(PICTURE_SUFFIXES):
            return bare
        return None

    def folder_name(self, model: str) -> str:
        """The hub folder (and repository name) of a model in this layout: `<name>` or `QuantaMaths_<name>`."""
        return model if self.name == FLAT else f"{PER_MODEL_PREFIX}{model}"


def hub_layout(name: str) -> HubLayout:
    if name not in LAYOUTS:
        raise InputError(f"layout {name!r}: expected one of {', '.join(LAYOUTS)}")
    return HubLayout(name)


def _is_name(text: str) -> bool:
    try:
        parse_name(text)
    except InputError:
        return False
    return True


def flat_models(folder: Path) -> list[str]:
    """The model names a flat folder holds files of (a `<name>.pth` or `<name>_train.json`), sorted."""
    names = set()
    for p in folder.iterdir():
        for kind in ("weights", "train"):
            suffix = _FLAT_SUFFIX[kind]
            if p.is_file() and p.name.endswith(suffix) and _is_name(p.name[: -len(suffix)]):
                names.add(p.name[: -len(suffix)])
    return sorted(names)


def is_per_model(folder: Path) -> bool:
    return any((folder / _PER_MODEL[k]).is_file() for k in ("weights", "train"))


def per_model_name(folder: Path) -> str:
    """The model a per-model folder holds: its manifest's `model`, else its training json's `model_name`, else
    the folder's name (less `QuantaMaths_`); one InputError line when none is a model name."""
    tried = []
    manifest = folder / MANIFEST
    if manifest.is_file():
        try:
            tried.append(json.loads(manifest.read_text()).get("model"))
        except (OSError, ValueError, AttributeError):
            raise InputError(f"{manifest}: unreadable (not a JSON object)") from None
    train = folder / _PER_MODEL["train"]
    if train.is_file():
        from arith.weights import read_train_json

        tried.append(read_train_json(train)["Config"].get("model_name"))
    tried.append(folder.name.removeprefix(PER_MODEL_PREFIX))
    for name in tried:
        if isinstance(name, str) and _is_name(name):
            return name
    raise InputError(
        f"{folder}: a per-model folder whose model is named nowhere (no manifest.json 'model', no Config "
        f"'model_name', and the folder's name is not QuantaMaths_<name>)"
    )


def layout_of(folder: str | Path) -> str:
    """FLAT or PER_MODEL for a folder holding a model's files; one InputError line for anything else."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    if is_per_model(folder):
        return PER_MODEL
    if flat_models(folder):
        return FLAT
    raise InputError(
        f"{folder}: holds no model's files (flat <name>.pth / <name>_train.json, or per-model model.pth / "
        "training_loss.json)"
    )


# ------------------------------------------------------------------------------------------------ finding models


@dataclass(frozen=True)
class ModelFiles:
    """One model's files found in one folder: `files` maps each kind present (KINDS and pictures) to its path;
    `hub` when the folder also has a model card and a manifest."""

    model: str
    folder: Path
    layout: str
    files: Mapping[str, Path] = field(default_factory=dict)
    hub: bool = False

    def path(self, kind: str) -> Path | None:
        return self.files.get(kind)

    @property
    def pictures(self) -> dict[str, Path]:
        return {k: p for k, p in self.files.items() if k.startswith(PICTURE)}


def models_in(folder: str | Path) -> list[ModelFiles]:
    """The models whose files lie directly in `folder` (either layout); [] when none do."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    hub = (folder / CARD).is_file() and (folder / MANIFEST).is_file()
    if is_per_model(folder):
        name, lay = per_model_name(folder), HubLayout(PER_MODEL)
        models = [name]
    else:
        models, lay = flat_models(folder), HubLayout(FLAT)
    out = []
    for name in models:
        files = {}
        for p in sorted(folder.iterdir()):
            kind = lay.kind_of(name, p.name) if p.is_file() else None
            if kind is not None:
                files[kind] = p
        out.append(ModelFiles(name, folder, lay.name, files, hub and len(models) == 1))
    return out


def _walk(folder: Path, depth: int) -> list[ModelFiles]:
    found = models_in(folder)
    if found or depth == 0:
        return found
    out = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if sub.name.startswith(".") or sub.name in SKIP_DIRS or sub.suffix == ".zarr":
            continue
        out += _walk(sub, depth - 1)
    return out


def find_models(folders: Iterable[str | Path], depth: int = 3) -> list[ModelFiles]:
    """Every model in the folders: a folder holding a model's files (a run folder, a hub folder of either
    layout, a fetch cache entry, a flat folder of many models), or one above such folders (a regeneration's
    `--out` with runs/ and hub/, a runs folder, the fetch cache, a local Hub's OWNER/REPO folders), up to
    `depth` levels down. One InputError line for a path that is no folder or holds no model."""
    out = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise InputError(f"{folder}: no such folder")
        found = _walk(folder, depth)
        if not found:
            raise InputError(
                f"{folder}: no model in it (no <name>.pth or <name>_train.json, nor model.pth or training_loss.json, "
                f"within {depth} folder levels)"
            )
        out += found
    return out


def merge(found: Sequence[ModelFiles]) -> dict[str, list[ModelFiles]]:
    """Found files grouped by model, in the order found (a run folder and its hub folders are one model)."""
    groups: dict[str, list[ModelFiles]] = {}
    for mf in found:
        groups.setdefault(mf.model, []).append(mf)
    return groups


# ------------------------------------------------------------------------------------------------ records


def read_records(path: str | Path) -> list[dict]:
    """A behaviour or maths file (either layout's name, any era's tag spelling): a JSON array of node objects
    with `is_head` and a list of string `tags`; one InputError line otherwise."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise InputError(f"{path}: not a behaviour or maths file (unreadable: {type(exc).__name__})") from None
    ok = isinstance(data, list) and all(
        isinstance(r, dict)
        and isinstance(r.get("is_head"), bool)
        and isinstance(r.get("tags"), list)
        and all(isinstance(t, str) for t in r["tags"])
        for r in data
    )
    if not ok:
        raise InputError(f"{path}: not a behaviour or maths file (expected a JSON array of nodes with is_head, tags)")
    return data


def _node(r: dict) -> tuple:
    return (r.get("position"), r.get("layer"), r.get("is_head"), r.get("num"))


def is_algo(tag: str) -> bool:
    return tag.split(":", 1)[0] == "Algo"


def split_records(behavior: Sequence[dict], maths: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    """(behaviors, features) of the per-model layout from a flat behaviour and maths file: behaviors keeps every
    tag that is not `Algo:` (the behaviour file's nodes in its order, then nodes only the maths file has),
    features only the `Algo:` tags of every useful node, also those with none (the maths file's nodes in its
    order, then nodes only the behaviour file has). Ours keep exactly this split, so for our runs both come
    back unchanged; a legacy maths file holding every tag is split."""

    def collect(first: Sequence[dict], second: Sequence[dict], keep) -> list[dict]:
        nodes: dict[tuple, dict] = {}
        for r in [*first, *second]:
            rec = nodes.setdefault(_node(r), {k: r[k] for k in ("position", "layer", "is_head", "num") if k in r})
            tags = rec.setdefault("tags", [])
            tags += [t for t in r["tags"] if keep(t) and t not in tags]
        return list(nodes.values())

    return collect(behavior, maths, lambda t: not is_algo(t)), collect(maths, behavior, is_algo)


# ------------------------------------------------------------------------------------------------ the table


@dataclass(frozen=True)
class ClassResult:
    """One question class's verdict: questions tested and failed, and the one-sided 95% upper bound on the
    failure rate (the exact rate for an exhaustive suite)."""

    name: str
    tested: int
    failed: int
    bound: float | None

    @property
    def per_million(self) -> float | None:
        return 1e6 * self.failed / self.tested if self.tested else None

    @property
    def bound_per_million(self) -> float | None:
        return None if self.bound is None else 1e6 * self.bound


@dataclass(frozen=True)
class Row:
    """One model's line of the zoo table; `sources` says where its files were read (not part of `same_as`)."""

    model: str
    suite: str | None
    classes: tuple[ClassResult, ...]
    useful_heads: int | None
    useful_mlps: int | None
    algo_nodes: int | None
    final_loss: float | None
    stages: tuple[str, ...]
    sources: tuple[str, ...] = ()
    # per class, the share of the baseline accuracy the behaviour file's circuit recovers (`varith study
    # sufficiency`'s `<name>_sufficiency.json`, where one was run): ((class, completeness), ...)
    completeness: tuple[tuple[str, float | None], ...] = ()

    def result(self, name: str) -> ClassResult | None:
        return next((c for c in self.classes if c.name == name), None)

    def content(self) -> Row:
        """The row without where it was read from: equal for the same files in any layout or folder."""
        return replace(self, sources=())


SUITE_ORDER = ("exhaustive", "random", "handpicked", "generated", "tricase")


def class_results(report: Mapping) -> tuple[ClassResult, ...]:
    """Per question class of one accuracy report (analysis.accuracy.accuracy_report's `by_operation`)."""
    from analysis.accuracy import binomial_upper_bound

    exact = "exhaustive" in report
    out = []
    for name, op in (report.get("by_operation") or {}).items():
        tested, failed = int(op["tested"]), int(op["failed"])
        bound = (failed / tested if tested else None) if exact else binomial_upper_bound(tested, failed)
        out.append(ClassResult(name, tested, failed, bound))
    return tuple(out)


def _accuracy(path: Path) -> tuple[str | None, tuple[ClassResult, ...]]:
    from analysis.accuracy import read_reports

    reports = read_reports(path)
    for key in [*SUITE_ORDER, *reports]:
        if key in reports:
            try:
                return key, class_results(reports[key])
            except (KeyError, TypeError, ValueError, AttributeError):
                raise InputError(f"{path}: the {key} report has no readable by_operation counts") from None
    return None, ()


def row_of(group: Sequence[ModelFiles]) -> Row:
    """The zoo row of one model from the files found of it (the first folder holding each kind gives it)."""
    from arith.weights import read_train_json

    model = group[0].model
    files: dict[str, Path] = {}
    for mf in group:
        for kind, path in mf.files.items():
            files.setdefault(kind, path)
    suite, classes = _accuracy(files["accuracy"]) if "accuracy" in files else (None, ())
    heads = mlps = algo = None
    if "behavior" in files:
        nodes = {_node(r): r["is_head"] for r in read_records(files["behavior"])}
        heads, mlps = sum(nodes.values()), sum(1 for h in nodes.values() if not h)
    if "maths" in files:
        algo = len({_node(r) for r in read_records(files["maths"]) if any(is_algo(t) for t in r["tags"])})
    loss = None
    if "train" in files:
        value = read_train_json(files["train"], name=model, complete=True)["Config"].get("final_loss")
        loss = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    stages = [stage for stage, kinds in STAGES if all(k in files for k in kinds)]
    if any(mf.hub for mf in group):
        stages.append("hub")
    sources = tuple(dict.fromkeys(str(mf.folder) for mf in group))
    complete = next((c for mf in group if (c := study_completeness(mf.folder / f"{model}{SUFFICIENCY}"))), ())
    return Row(model, suite, classes, heads, mlps, algo, loss, tuple(stages), sources, complete)


SUFFICIENCY = "_sufficiency.json"  # what `varith study sufficiency` writes beside the weights


def study_completeness(path: Path) -> tuple[tuple[str, float | None], ...]:
    """The completeness per class of a sufficiency study's JSON (() when there is none; one InputError line when
    it is unreadable)."""
    import json

    if not path.is_file():
        return ()
    try:
        per_class = json.loads(path.read_text())["completeness"]
        return tuple(
            (str(c), None if v.get("completeness") is None else float(v["completeness"])) for c, v in per_class.items()
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise InputError(f"{path}: not a sufficiency study (no readable completeness per class)") from None


def zoo_rows(folders: Iterable[str | Path]) -> list[Row]:
    """One row per model found in the folders (find_models), sorted by model name."""
    groups = merge(find_models(folders))
    return [row_of(groups[name]) for name in sorted(groups)]


def _classes(rows: Sequence[Row]) -> tuple[str, ...]:
    extra = sorted({c.name for r in rows for c in r.classes} - set(CLASSES))
    return (*CLASSES, *extra)


def _num(x, fmt: str) -> str:
    return "" if x is None else format(x, fmt)


def per_million_text(x: float | None) -> str:
    """A count per million to 4 significant digits, never in exponent form ("" when there is none)."""
    if x is None:
        return ""
    if x == 0:
        return "0"
    return f"{x:.{max(0, 3 - math.floor(math.log10(abs(x))))}f}"


def table(rows: Sequence[Row]) -> tuple[list[str], list[list[str]]]:
    """(header, cells) of the zoo table: the one source of the Markdown and the CSV."""
    classes = _classes(rows)
    header = ["model", "stages", "suite"]
    for c in classes:
        header += [f"{c} tested", f"{c} failed", f"{c} failures per million", f"{c} 95% bound per million"]
    header += ["useful heads", "useful MLPs", "Algo nodes", "final loss"]
    studied = sorted({c for r in rows for c, _v in r.completeness})
    header += [f"{c} completeness" for c in studied]
    cells = []
    for r in rows:
        line = [r.model, " ".join(r.stages), r.suite or ""]
        for name in classes:
            c = r.result(name)
            if c is None:
                line += ["", "", "", ""]
            else:
                line += [str(c.tested), str(c.failed), per_million_text(c.per_million)]
                line.append(per_million_text(c.bound_per_million))
        line += [
            _num(r.useful_heads, "d"),
            _num(r.useful_mlps, "d"),
            _num(r.algo_nodes, "d"),
            _num(r.final_loss, ".6g"),
        ]
        line += [_num(dict(r.completeness).get(c), ".3f") for c in studied]
        cells.append(line)
    return header, cells


def to_markdown(rows: Sequence[Row]) -> str:
    header, cells = table(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c or "-" for c in line) + " |" for line in cells]
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[Row]) -> str:
    header, cells = table(rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(cells)
    return buf.getvalue()


def draw(rows: Sequence[Row], path: str | Path) -> Path:
    """A picture of the accuracy per model and question class: one cell per (model, class), its shade the
    failures per million on a log scale, its text the accuracy and the 95% bound (blank: not tested)."""
    import matplotlib
    import numpy as np
    from matplotlib.colors import ListedColormap, LogNorm
    from matplotlib.figure import Figure

    classes = _classes(rows)
    per_m = np.full((max(1, len(rows)), len(classes)), np.nan)
    for i, r in enumerate(rows):
        for j, name in enumerate(classes):
            c = r.result(name)
            if c is not None and c.per_million is not None:
                per_m[i, j] = c.per_million
    shown = np.clip(per_m, 1.0, 1e6)  # 0 failures shows as the lightest shade
    height = 1.6 + 0.38 * max(1, len(rows))
    with matplotlib.rc_context({"svg.hashsalt": "varith-zoo"}):
        fig = Figure(figsize=(3.0 + 1.9 * len(classes), height), dpi=100, layout="constrained")
        ax = fig.add_subplot()
        shades = matplotlib.colormaps["Reds"](np.linspace(0.05, 0.6, 256))  # dark enough, the text stays legible
        cmap = ListedColormap(shades).with_extremes(bad="white")
        image = ax.imshow(shown, cmap=cmap, norm=LogNorm(1.0, 1e6), aspect="auto")
        for i, r in enumerate(rows):
            for j, name in enumerate(classes):
                c = r.result(name)
                if c is None or not c.tested:
                    continue
                bound = "" if c.bound is None else f"\n<= {per_million_text(c.bound_per_million)}/M"
                ax.text(j, i, f"{100 * (1 - c.failed / c.tested):.4g}%{bound}", ha="center", va="center", fontsize=7)
        bar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
        bar.set_label("failures per million questions (log)", fontsize=8)
        ax.set_xticks(range(len(classes)), classes, fontsize=8)
        ax.set_yticks(range(len(rows)), [r.model for r in rows], fontsize=8)
        ax.set_title("accuracy per model and question class, 95% upper bound on failures per million", fontsize=9)
        ax.set_xlabel("question class (blank: not tested)", fontsize=8)
        path = Path(path)
        fig.savefig(path, dpi=100, metadata={"Software": None} if path.suffix == ".png" else {"Date": None})
    return path


@dataclass(frozen=True)
class ZooFiles:
    markdown: Path
    csv: Path
    picture: Path


def write_zoo(rows: Sequence[Row], out: str | Path, stem: str = "zoo") -> ZooFiles:
    """`out/<stem>.md`, `.csv` and `.png` of the rows (atomic writes)."""
    from arith.files import atomic_write_bytes

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md, table_csv, png = out / f"{stem}.md", out / f"{stem}.csv", out / f"{stem}.png"
    atomic_write_bytes(md, to_markdown(rows).encode())
    atomic_write_bytes(table_csv, to_csv(rows).encode())
    tmp = out / f".{stem}.drawing.png"
    draw(rows, tmp)
    tmp.replace(png)
    return ZooFiles(md, table_csv, png)
