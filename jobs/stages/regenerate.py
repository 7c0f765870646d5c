"""`varith regenerate`: every published model made again, from training to its hub folder.

The catalog (`jobs/catalog.toml`) lists the published models, their notes and the addition model each ins*
model starts from, plus two recipes: `full` (the published one, for a GPU cluster) and `tiny` (the same chain,
shrunk to fit a 2-core CPU: names keep their shape and seed, steps are rewritten as `varith sweep --steps`
does, and the verification asks fewer questions).

Per model, in dependency order (an insert model, and everything it needs, first; an insert model that is not
published gets only the stages an ins* model needs of it: its weights and its behaviour file):

    train   the sweep machinery (jobs.runs.sweeps: submitit on slurm, local or debug), one run under OUT/runs/
    verify  random questions per trained operation (1M at full scale) -> <name>_accuracy.json
    ablate  node ablation (jobs.stages.ablate) -> <name>_behavior.json, sidecar, quanta maps
    algo    algorithm search (jobs.stages.algo) -> <name>_maths.json
    hub     OUT/hub/<name>/ (--layout flat: the published files flat) and/or OUT/hub/QuantaMaths_<name>/
            (per-model: model.pth, training_loss.json, behaviors.json, features.json, ...), each with README.md
            (the model card) and manifest.json

On slurm the Dask stages farm their blocks over SLURM workers (the profile's [slurm] and [dask]); elsewhere
they run in this process. On slurm and local, the models that need no other model's files are trained ahead,
together (one sweep per seed, its runs in parallel), before the per-model chains.

A stage is skipped when its outputs exist and check out: training by its manifest (jobs.runs.markers), the others
by the stamps `OUT/runs/<name>/stage.json` keeps (sha256 of what each finished stage read and wrote, its quanta
maps included) plus their own checks (the accuracy report's suite and weights sha256, the schema of the behaviour
and maths files, the hub folder's manifest). A stage is also redone when a stage it depends on (DEPENDS) finished
after it: the record numbers each finished stage, so a redone ablation is followed by the algorithm search and
the hub folder, even across an interruption. So a regeneration that was interrupted resumes where it stopped. A
model that fails is named in the summary; the others go on (those that need it are not started).

Each stage removes only the files it owns: the quanta maps belong to the stage that draws them
(jobs.runs.rundir.QUANTA_OWNERS: `algo` draws `<name>_quanta_algo.*`, `ablate` every other view).
"""

from __future__ import annotations

import json
import shlex
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arith.errors import InputError
from arith.files import atomic_write_json, sha256_file
from arith.names import check_pair, expand_arch, parse_name, sidecar_path
from hpc.cluster import ClusterSpec
from jobs.runs.rundir import RunDir, submitit_folder
from jobs.stages.template import Stage, preload, run_stage
from jobs.stages.verify import VerifyJob, VerifySettings, VerifyStage

STAGES = ("train", "verify", "ablate", "algo", "hub")
# what each stage reads of the others: when one of these finished after it, the stage is redone
DEPENDS = {
    "train": (),
    "verify": ("train",),
    "ablate": ("train",),
    "algo": ("train", "ablate"),
    "hub": ("train", "verify", "ablate", "algo"),
}
INSERT_STAGES = ("train", "ablate")  # what an ins* model needs of an addition model that is not published
SCALES = ("full", "tiny")
# `--cluster`: the Dask stages' vocabulary (hpc.cluster.DASK_KINDS); training goes to the matching submitit backend
TRAIN_BACKEND = {"slurm": "slurm", "local": "local", "none": "debug"}
CLUSTERS = tuple(TRAIN_BACKEND)
CATALOG = Path(__file__).resolve().parent.parent / "catalog.toml"
_MODEL_KEYS = {"name", "note", "insert"}
_RECIPE_KEYS = {"steps", "step_fraction", "train", "questions"}


# ------------------------------------------------------------------------------------------------ catalog


@dataclass(frozen=True)
class Entry:
    name: str
    note: str = ""
    insert: str | None = None


@dataclass(frozen=True)
class Recipe:
    scale: str
    steps: int | None = None  # rewrites every name's step count (None: the names' own)
    train: tuple[tuple[str, Any], ...] = ()  # TrainConfig overrides
    questions: int = 1_000_000  # random verification questions per operation
    step_fraction: float | None = None  # scales each name's step count (when `steps` is None)

    def steps_of(self, name: str) -> int | None:
        """The step count a catalog model trains for at this recipe (None: its name's own)."""
        if self.steps is not None:
            return self.steps
        if self.step_fraction is not None:
            return max(1, round(parse_name(name).steps * self.step_fraction))
        return None


@dataclass(frozen=True)
class Catalog:
    models: tuple[Entry, ...]
    recipes: tuple[Recipe, ...]

    def recipe(self, scale: str) -> Recipe:
        for r in self.recipes:
            if r.scale == scale:
                return r
        raise InputError(f"catalog has no [recipe.{scale}]")

    def entry(self, name: str) -> Entry | None:
        return next((e for e in self.models if e.name == name), None)


def positive_int(value, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InputError(f"{what} must be a positive whole number, got {value!r}")
    return value


def read_catalog(path: str | Path | None = None) -> Catalog:
    from jobs.runs.training import TRAIN_OVERRIDES

    path = Path(path) if path else CATALOG
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"catalog {path}: unreadable ({exc})") from None
    models = []
    for i, m in enumerate(data.get("model", [])):
        unknown = sorted(set(m) - _MODEL_KEYS)
        if unknown or "name" not in m:
            raise InputError(f"catalog {path}: model {i} needs a name and takes only {sorted(_MODEL_KEYS)}")
        main = parse_name(m["name"])
        if m.get("insert"):
            check_pair(main, parse_name(m["insert"]), f"catalog {path}: {m['name']}")
        elif main.insert_mode:
            raise InputError(f"catalog {path}: {m['name']} is an ins* model and names no insert model")
        models.append(Entry(m["name"], str(m.get("note", "")), m.get("insert")))
    recipes = []
    for scale, r in (data.get("recipe") or {}).items():
        if scale not in SCALES or set(r) - _RECIPE_KEYS:
            raise InputError(f"catalog {path}: [recipe.{scale}]: scales are {SCALES}, keys {sorted(_RECIPE_KEYS)}")
        train = dict(r.get("train") or {})
        bad = sorted(set(train) - set(TRAIN_OVERRIDES))
        if bad:
            raise InputError(f"catalog {path}: [recipe.{scale}] unknown training setting(s) {bad}")
        steps = positive_int(r["steps"], f"[recipe.{scale}] steps") if "steps" in r else None
        questions = positive_int(r.get("questions", 1_000_000), f"[recipe.{scale}] questions")
        fraction = r.get("step_fraction")
        if fraction is not None and (
            not isinstance(fraction, int | float) or isinstance(fraction, bool) or not 0 < fraction <= 1
        ):
            raise InputError(f"catalog {path}: [recipe.{scale}] step_fraction must be in (0, 1], got {fraction!r}")
        recipes.append(Recipe(scale, steps, tuple(sorted(train.items())), questions, fraction))
    if len({e.name for e in models}) != len(models):
        raise InputError(f"catalog {path}: a model is listed twice")
    return Catalog(tuple(models), tuple(recipes))


# ------------------------------------------------------------------------------------------------ plan


@dataclass(frozen=True)
class Step:
    """One model of a regeneration: its run name at this scale, the catalog name it stands for, the run name
    of its insert model and whether it is published (an unpublished insert model gets INSERT_STAGES)."""

    name: str
    source: str
    insert: str | None = None
    insert_source: str | None = None
    note: str = ""
    published: bool = True

    @property
    def stages(self) -> tuple[str, ...]:
        return STAGES if self.published else INSERT_STAGES

    @property
    def arch(self) -> str:
        """The sweep architecture of the model at this scale: its run name (the step count in it) without the
        seed, with its insert model's run name."""
        arch = self.name[: self.name.rindex("_s")]
        return f"{arch},{self.insert}" if self.insert else arch


def _step(catalog: Catalog, source: str, recipe: Recipe, published: bool) -> Step:
    entry = catalog.entry(source) or Entry(source)
    seed = parse_name(source).seed
    arch = source[: source.rindex("_s")] + (f",{entry.insert}" if entry.insert else "")
    main, _insert = expand_arch(arch, seed, recipe.steps_of(source))  # (checks the pair)
    insert = _step(catalog, entry.insert, recipe, False).name if entry.insert else None
    return Step(main.format(), source, insert, entry.insert, entry.note, published)


def run_names(catalog: Catalog, recipe: Recipe) -> dict[str, str]:
    """{run name at this recipe: catalog name} of every catalog model (the names `regenerate` prints)."""
    return {_step(catalog, e.name, recipe, True).name: e.name for e in catalog.models}


def catalog_name(catalog: Catalog, recipe: Recipe, name: str) -> str:
    """The catalog name a `--models` word stands for: a catalog name, or the run name it has at this recipe
    (`add_d5_l1_h3_t300_s372001` at --scale tiny)."""
    if catalog.entry(name) is not None:
        return name
    here = run_names(catalog, recipe)
    if name in here:
        return here[name]
    for other in catalog.recipes:
        if other.scale != recipe.scale and name in (there := run_names(catalog, other)):
            raise InputError(
                f"{name}: the run name of {there[name]} at --scale {other.scale}; pass --scale {other.scale} "
                f"or the catalog name {there[name]}"
            )
    raise InputError(
        f"{name}: not in the catalog, nor a catalog model's run name at --scale {recipe.scale} "
        "(see jobs/catalog.toml, or varith regenerate --dry-run for the names)"
    )


def plan(catalog: Catalog, recipe: Recipe, models: Sequence[str] | None = None) -> list[Step]:
    """The models asked for (default: the whole catalog) and the insert models they need, inserts first. A
    model is named by its catalog name or by its run name at this recipe."""
    names = [catalog_name(catalog, recipe, n) for n in models] if models else [e.name for e in catalog.models]
    out: dict[str, Step] = {}

    def add(source: str, published: bool) -> None:
        if source in out:
            return
        entry = catalog.entry(source)
        if entry is not None and entry.insert:
            add(entry.insert, catalog.entry(entry.insert) is not None)
        out[source] = _step(catalog, source, recipe, published)

    for n in names:
        add(n, True)
    steps = list(out.values())
    seen: dict[str, str] = {}
    for s in steps:
        if s.name in seen:
            raise InputError(
                f"{seen[s.name]} and {s.source} share the run name {s.name} at this scale (--steps gives every "
                "model one step count: regenerate them in separate runs, or leave --steps out)"
            )
        seen[s.name] = s.source
    return steps


# ------------------------------------------------------------------------------------------------ options


@dataclass(frozen=True)
class Options:
    out: Path
    recipe: Recipe
    cluster: str = "none"
    profile: str | None = None
    retries: int = 1
    device: str = "auto"
    command: str = ""  # the command that reproduces a model (in its card); {name} is the catalog name
    layout: str = "flat"  # the hub folders: flat, per-model or both (jobs.stages.hub.layouts)

    @property
    def runs_dir(self) -> Path:
        return Path(self.out) / "runs"

    @property
    def hub_dir(self) -> Path:
        return Path(self.out) / "hub"

    def run(self, step: Step) -> RunDir:
        return RunDir.of(self.runs_dir, step.name)

    @property
    def train_backend(self) -> str:
        """The submitit backend training runs on (hpc.launcher.BACKENDS)."""
        return TRAIN_BACKEND[self.cluster]

    def where(self, stage: str) -> str:
        from hpc.cluster import DASK_KINDS
        from hpc.launcher import backend

        if stage == "train":
            return backend(self.train_backend).where
        if stage in ("verify", "ablate", "algo"):
            return DASK_KINDS[self.cluster].where
        return "this process"

    def spec(self, stage: Stage, job) -> ClusterSpec:
        """The Dask cluster of a stage's job (any kind: `none` runs its blocks in this process)."""
        return ClusterSpec(
            kind=self.cluster,
            profile=self.profile,
            n_tasks=stage.tasks(job),
            use_gpus=self.device != "cpu",
            preload=preload(stage),
        )


def options_check(opts: Options) -> None:
    from jobs.stages.hub import layouts

    layouts(opts.layout)
    if opts.cluster not in CLUSTERS:
        raise InputError(f"unknown cluster {opts.cluster!r} (expected {', '.join(CLUSTERS)})")
    from hpc.cluster import DASK_KINDS

    if DASK_KINDS[opts.cluster].takes_profile and not opts.profile:
        raise InputError(f"--cluster {opts.cluster} needs --profile FILE.toml (the [slurm] and [dask] settings)")
    if opts.profile and not DASK_KINDS[opts.cluster].takes_profile:
        raise InputError("--profile is read by --cluster slurm")
    if opts.profile:
        from hpc.profile import load_profile

        load_profile(opts.profile)  # a missing or wrong profile is refused before anything runs


# ------------------------------------------------------------------------------------------------ stage records


def read_record(run: RunDir) -> dict:
    try:
        data = json.loads(run.stage.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _order(record: dict) -> dict[str, int]:
    order = record.get("order")
    if not isinstance(order, dict):
        return {}
    return {k: v for k, v in order.items() if isinstance(v, int) and not isinstance(v, bool)}


def write_record(run: RunDir, stage: str, state: str, error: str | None = None, stamp: dict | None = None) -> None:
    """The model's stage and state; a finished stage's stamp (sha256 of what it read and wrote) and its number
    in the order stages finished (`order`: each finish gets the next number); an unfinished one loses both."""
    record = read_record(run)
    stamps = dict(record.get("stamps") or {})
    order = _order(record)
    if stamp is not None:
        stamps[stage] = stamp
    elif state != "done":
        stamps.pop(stage, None)
    if state == "done":
        order[stage] = max(order.values(), default=0) + 1
    else:
        order.pop(stage, None)
    record.update(stage=stage, state=state, error=error, updated_at=time.time(), stamps=stamps, order=order)
    atomic_write_json(run.stage, record, indent=1)


def after_its_inputs(run: RunDir, stage: str) -> bool:
    """False when a stage this one depends on (DEPENDS) finished after it: its inputs may have changed."""
    order = _order(read_record(run))
    mine = order.get(stage)
    for dep in DEPENDS.get(stage, ()):
        theirs = order.get(dep)
        if theirs is not None and (mine is None or mine < theirs):
            return False
    return True


def _stamp(run: RunDir, paths: Sequence[Path]) -> dict[str, str]:
    """sha256 of each file, keyed by its path relative to the run folder (or absolute, outside it)."""
    out = {}
    for p in paths:
        p = Path(p)
        try:
            key = str(p.resolve().relative_to(run.path.resolve()))
        except ValueError:
            key = str(p.resolve())
        out[key] = sha256_file(p)
    return out


def stamp_ok(run: RunDir, stage: str) -> bool:
    """The stage's stamp: every file it read and wrote is there with the same sha256, and no stage it depends
    on finished after it."""
    stamp = (read_record(run).get("stamps") or {}).get(stage)
    if not isinstance(stamp, dict) or not stamp or not after_its_inputs(run, stage):
        return False
    for key, sha in stamp.items():
        p = Path(key) if Path(key).is_absolute() else run.path / key
        if not p.is_file() or sha256_file(p) != sha:
            return False
    return True


# ------------------------------------------------------------------------------------------------ stages


def _suite(opts: Options, run: RunDir):
    from arith.verify import RandomSuite
    from arith.weights import model_info, trained_ops

    shape, n_digits, config = model_info(run.weights)
    return shape, RandomSuite(n_digits, trained_ops(config, run.name), opts.recipe.questions)


def _hub_sources(run: RunDir) -> list[Path]:
    return [run.weights, run.train_json, run.accuracy_json, run.behavior_json, run.maths_json, *run.quanta_maps()]


def _clear_own_maps(run: RunDir, stage: str) -> None:
    """Before a stage draws again: its own quanta maps go (a view it no longer draws must not linger); the
    other stages' maps stay."""
    for old in run.quanta_maps(stage):
        old.unlink()


def _own_maps(run: RunDir, stage: str, written: Sequence[Path]) -> list[Path]:
    """The quanta maps a stage drew, checked to be its own (jobs.runs.rundir.QUANTA_OWNERS)."""
    mine = run.quanta_maps(stage)
    names = {p.name for p in mine}
    foreign = sorted(Path(p).name for p in written if Path(p).suffix in (".svg", ".png") and Path(p).name not in names)
    if foreign:
        raise RuntimeError(f"{stage} drew quanta maps another stage owns: {' '.join(foreign)}")
    return mine


class Stages:
    """What each stage does (`run_<stage>`, returning the files to stamp) and whether its outputs already
    check out (`done_<stage>`). Tests may replace pieces."""

    def __init__(self, opts: Options):
        self.opts = opts

    # -- train
    def done_train(self, step: Step) -> bool:
        from jobs.runs import lifecycle as runs

        run = self.opts.run(step)
        return run.path.is_dir() and runs.resolve_one(run.path).state == "done"

    def train_many(self, steps: Sequence[Step]) -> dict[str, Any]:
        """Train models of one seed in one sweep (in parallel on slurm and local): {run name: status row}."""
        from hpc.launcher import LaunchConfig, backend
        from hpc.profile import resolve_slurm
        from jobs.runs.sweeps import SweepOptions, SweepRequest, run_sweep

        opts = self.opts
        seeds = {parse_name(s.source).seed for s in steps}
        if len(seeds) != 1:
            raise ValueError("train_many takes models of one seed")
        settings = resolve_slurm(opts.profile, None, {})
        req = SweepRequest(
            tuple(s.arch for s in steps),
            tuple(seeds),
            opts.runs_dir,
            overrides=opts.recipe.train,
            steps=None,  # each step's arch holds its own step count (Step.arch)
            threads=settings.cpus_per_task,
        )
        folder = submitit_folder(opts.runs_dir, opts.train_backend)
        lc = LaunchConfig(cluster=opts.train_backend, folder=folder, slurm=settings, job_name="varith-regen")
        poll = backend(opts.train_backend).poll_s
        outcome = run_sweep(SweepOptions(req, lc, opts.retries, poll, False, False, False))
        return {r.name: r for r in (outcome.rows if outcome else ())}

    def run_train(self, step: Step) -> list[Path]:
        row = self.train_many([step]).get(step.name)
        if row is None or row.state != "done":
            raise RuntimeError(f"training ended {row.state if row else 'without a run'}: {row.detail if row else ''}")
        run = self.opts.run(step)
        return [run.weights, run.train_json]

    # -- verify
    def done_verify(self, step: Step) -> bool:
        from analysis.accuracy import read_reports

        run = self.opts.run(step)
        if not stamp_ok(run, "verify"):
            return False
        try:
            report = read_reports(run.accuracy_json).get("random") or {}
            _, suite = _suite(self.opts, run)
        except InputError:
            return False
        same_suite = report.get("suite") == json.loads(json.dumps(suite.fingerprint()))
        return same_suite and report.get("weights_sha256") == sha256_file(run.weights)

    def run_verify(self, step: Step) -> list[Path]:
        from analysis.accuracy import accuracy_report, write_report

        opts = self.opts
        run = opts.run(step)
        shape, suite = _suite(opts, run)
        stage = VerifyStage(VerifySettings(device=opts.device, progress=False))
        job = VerifyJob(run.weights, shape, suite, run.store.resolve(), suite.name)
        ((_job, counts),) = run_stage(stage, [job], opts.spec(stage, job))
        extra = {"weights_sha256": sha256_file(run.weights), "mode": "reference"}
        write_report(run.accuracy_json, accuracy_report(counts, suite, run.name, extra=extra))
        return [run.weights, run.accuracy_json]

    # -- ablate
    def done_ablate(self, step: Step) -> bool:
        from analysis.behavior import load_records, read_sidecar

        run = self.opts.run(step)
        if not stamp_ok(run, "ablate"):
            return False
        try:
            load_records(run.behavior_json)
            meta = read_sidecar(run.behavior_json)
        except (InputError, OSError, ValueError):
            return False
        return meta.get("weights_sha256") == sha256_file(run.weights) and meta.get("mode") == "corrected"

    def run_ablate(self, step: Step) -> list[Path]:
        from jobs.stages import ablate as ablation

        run = self.opts.run(step)
        settings = ablation.Settings(device=self.opts.device, progress=False)
        job = ablation.job_for(run.weights)
        stage = ablation.AblateStage(settings)
        ((job, records),) = run_stage(stage, [job], self.opts.spec(stage, job))
        tiny = self.opts.recipe.scale == "tiny"  # its few-step models learn nothing: the plumbing is what it tests
        _clear_own_maps(run, "ablate")  # the views drawn now replace the last ablation's (the algo map stays)
        written = ablation.write_outputs(job, settings, records, pictures=True, allow_empty=tiny)  # else NoUsefulNodes
        if not records:
            print(f"{run.name}: note: the model answers none of the {len(job.op)} ablation questions (no useful nodes)")
        maps = _own_maps(run, "ablate", written)
        return [run.weights, run.behavior_json, sidecar_path(run.behavior_json), *maps]

    # -- algo
    def done_algo(self, step: Step) -> bool:
        from analysis.behavior import load_records, stale_files

        run = self.opts.run(step)
        if not stamp_ok(run, "algo"):
            return False
        try:
            load_records(run.maths_json)
        except InputError:
            return False
        return not stale_files(run.behavior_json, [run.maths_json, *run.quanta_maps("algo")])

    def run_algo(self, step: Step) -> list[Path]:
        from jobs.stages import algo as algo_run

        run = self.opts.run(step)
        job = algo_run.job_for(run.weights, allow_empty=True)  # the ablate stage refused an empty one (not tiny)
        stage = algo_run.AlgoStage(algo_run.Settings(device=self.opts.device, progress=False))
        ((job, records),) = run_stage(stage, [job], self.opts.spec(stage, job))
        _clear_own_maps(run, "algo")  # a search that tags nothing draws no map: the last one must not stay
        algo_run.write_outputs(job, records)
        return [run.weights, run.behavior_json, run.maths_json, *run.quanta_maps("algo")]

    # -- hub
    def hub_folders(self, step: Step) -> list[Path]:
        """The model's hub folders, one per layout of --layout (`<name>/`, `QuantaMaths_<name>/`)."""
        from jobs.stages.hub import folder_name, layouts

        return [self.opts.hub_dir / folder_name(step.name, lay) for lay in layouts(self.opts.layout)]

    def done_hub(self, step: Step) -> bool:
        """Its stamp checks out and every layout's folder is the run's, up to date: its manifest checks out and
        it holds exactly the run's files to publish (quanta maps included), the same bytes, plus the card and
        the manifest (jobs.stages.hub.folder_matches)."""
        from jobs.stages.hub import folder_matches, layouts

        run = self.opts.run(step)
        if not stamp_ok(run, "hub"):
            return False
        folders = zip(layouts(self.opts.layout), self.hub_folders(step), strict=True)
        return all(folder_matches(run.path, folder, lay) for lay, folder in folders)

    def run_hub(self, step: Step) -> list[Path]:
        from arith.manifest import MANIFEST

        run = self.opts.run(step)
        folders = build_hub_folders(run, step, self.opts)
        return [*_hub_sources(run), *(folder / MANIFEST for folder in folders)]


def build_hub_folders(run: RunDir, step: Step, opts: Options) -> list[Path]:
    """The hub folders of a finished model in each layout of `opts.layout` (jobs.stages.hub.build_folders:
    each built beside its place and then moved there), with the model card and the manifest."""
    from analysis.accuracy import read_reports
    from analysis.card import CardInput, model_card
    from arith.weights import read_train_json
    from jobs.stages.hub import build_folders

    report = read_reports(run.accuracy_json)["random"]
    config = read_train_json(run.train_json).get("Config", {})
    behavior = json.loads(run.behavior_json.read_text())
    maths = json.loads(run.maths_json.read_text())
    command = opts.command.replace("{name}", step.source)
    card = CardInput(
        name=run.name,
        source=step.source,
        note=step.note,
        accuracy=report,
        pictures=tuple(p.name for p in run.quanta_maps() if p.suffix == ".png"),
        insert=step.insert,
        scale=opts.recipe.scale,
        train_config=config,
        useful_nodes=len(behavior),
        algo_nodes=sum(1 for r in maths if r["tags"]),
        command=command,
    )
    seeds = {"training": parse_name(run.name).seed, "verification": report["suite"].get("seed")}
    if config.get("analysis_seed") is not None:
        seeds["analysis"] = config["analysis_seed"]
    return build_folders(
        run.path,
        opts.hub_dir,
        opts.layout,
        model=run.name,
        card=model_card(card),
        seeds=seeds,
        source=step.source,
        insert=step.insert,
        scale=opts.recipe.scale,
        recipe={
            "steps": opts.recipe.steps_of(step.source),
            "train": dict(opts.recipe.train),
            "questions": opts.recipe.questions,
        },
        reproduce=command,
    )


# ------------------------------------------------------------------------------------------------ driver


@dataclass(frozen=True)
class Outcome:
    name: str
    state: str  # done | failed | blocked
    stage: str | None  # the stage it failed at
    error: str | None = None
    ran: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.state != "done"]


def _say(msg: str) -> None:
    print(f"[regenerate {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_model(step: Step, stages: Stages) -> Outcome:
    """Every stage of one model, skipping those whose outputs check out. A stage's error ends this model
    only; Ctrl-C (KeyboardInterrupt) ends the regeneration, the stage recorded as interrupted."""
    run = stages.opts.run(step)
    ran, skipped = [], []
    for stage in step.stages:
        if getattr(stages, f"done_{stage}")(step):
            skipped.append(stage)
            _say(f"{step.name}: {stage} skipped (done and checked)")
            continue
        _say(f"{step.name}: {stage} started ({stages.opts.where(stage)})")
        t0 = time.time()
        try:
            if run.path.is_dir():
                write_record(run, stage, "running")
            paths = getattr(stages, f"run_{stage}")(step)
        except KeyboardInterrupt:
            if run.path.is_dir():
                write_record(run, stage, "interrupted")
            _say(f"{step.name}: {stage} interrupted")
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            if run.path.is_dir():
                write_record(run, stage, "failed", error)
            _say(f"{step.name}: {stage} failed: {error}")
            return Outcome(step.name, "failed", stage, error, tuple(ran), tuple(skipped))
        write_record(run, stage, "done", stamp=_stamp(run, paths))
        ran.append(stage)
        _say(f"{step.name}: {stage} done ({time.time() - t0:.1f}s)")
    return Outcome(step.name, "done", None, None, tuple(ran), tuple(skipped))


def ahead_groups(steps: Sequence[Step], opts: Options, stages: Stages) -> list[list[Step]]:
    """On slurm and local: the models that need no other model's files and are not trained yet, one group
    per seed (one sweep each, its runs in parallel); nothing when training runs in this process (one thing at a
    time anyway)."""
    from hpc.launcher import backend

    if backend(opts.train_backend).in_process:
        return []
    groups: dict[int, list[Step]] = {}
    for s in steps:
        if s.insert is None and not stages.done_train(s):
            groups.setdefault(parse_name(s.source).seed, []).append(s)
    return [g for g in groups.values() if len(g) > 1]


def train_ahead(steps: Sequence[Step], opts: Options, stages: Stages) -> None:
    """Submit the trainings of `ahead_groups` together before the per-model chains, which then find them done
    (a model whose training failed here is tried again in its chain)."""
    for group in ahead_groups(steps, opts, stages):
        _say(f"training ahead together ({opts.where('train')}): {' '.join(s.name for s in group)}")
        try:
            stages.train_many(group)
        except Exception as exc:  # each model's chain tries again and reports its own failure
            _say(f"training ahead failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")


def regenerate(steps: Sequence[Step], opts: Options, stages: Stages | None = None) -> Report:
    stages = stages or Stages(opts)
    report = Report()
    t0 = time.time()
    train_ahead(steps, opts, stages)
    by_source = {s.source: s for s in steps}
    state: dict[str, str] = {}
    for step in steps:
        need = by_source.get(step.insert_source) if step.insert_source else None
        if need is not None and state.get(need.source) != "done":
            why = f"insert model {need.name} did not finish"
            _say(f"{step.name}: not started: {why}")
            outcome = Outcome(step.name, "blocked", "train", why)
        else:
            outcome = run_model(step, stages)
        state[step.source] = outcome.state
        report.outcomes.append(outcome)
    report.seconds = time.time() - t0
    return report


def dry_run_text(steps: Sequence[Step], opts: Options, stages: Stages | None = None, rates=None) -> str:
    """Every model, its stages (with where each would run, or that it is done), its dependencies, and what it
    will cost: training steps and verification questions, and hours at `rates` (jobs.stages.estimate.Rates)."""
    from jobs.stages.estimate import model_cost, total_lines

    stages = stages or Stages(opts)
    r = opts.recipe
    how_many = r.steps or (f"x{r.step_fraction:g} of each name's" if r.step_fraction else "as named")
    lines = [
        f"# varith regenerate (dry run): {len(steps)} model(s), scale {r.scale}, cluster {opts.cluster}, "
        f"out {opts.out}",
        f"# recipe: steps {how_many}, training {dict(r.train) or 'defaults'}, "
        f"{r.questions:,} verification questions per operation",
    ]
    for group in ahead_groups(steps, opts, stages):
        lines.append(f"# trained ahead together, one sweep: {' '.join(s.name for s in group)}")
    costs = []
    for step in steps:
        extra = "" if step.name == step.source else f" (for {step.source})"
        role = "" if step.published else " [insert model, not published: trained first]"
        lines.append(f"{step.name}{extra}{role}")
        if step.insert:
            lines.append(f"  after: {step.insert} (weights and behaviour file)")
        done = {stage: getattr(stages, f"done_{stage}")(step) for stage in step.stages}
        name = parse_name(step.name)
        ops = sum(p > 0 for p in (name.perc_add, name.perc_sub, name.perc_mult))
        verifies = "verify" in step.stages and not done["verify"]
        cost = model_cost(step.name, r.questions if verifies else 0, ops, rates, train=not done["train"])
        costs.append(cost)
        for stage in step.stages:
            what = "skip (done and checked)" if done[stage] else opts.where(stage)
            if stage == "train" and not done[stage]:
                what += f", {cost.steps:,} steps" + (f", {cost.train_h:.2f} h" if cost.train_h is not None else "")
            if stage == "verify" and not done[stage]:
                hours = f", {cost.verify_h:.2f} h" if cost.verify_h is not None else ""
                what += f", {cost.questions:,} questions{hours}"
            lines.append(f"  {stage:<6} {what}")
    return "\n".join(lines + total_lines(costs, rates))


def summary_text(report: Report) -> str:
    lines = []
    for o in report.outcomes:
        if o.state == "done":
            what = f"ran {', '.join(o.ran) or 'nothing'}" + (f"; skipped {', '.join(o.skipped)}" if o.skipped else "")
            lines.append(f"done    {o.name} ({what})")
        else:
            lines.append(f"{o.state:<7} {o.name} at {o.stage}: {o.error}")
    n_ok = sum(o.state == "done" for o in report.outcomes)
    lines.append(f"{n_ok}/{len(report.outcomes)} model(s) regenerated in {report.seconds:.1f}s")
    failed = [o.name for o in report.failed]
    if failed:
        lines.append("failed: " + " ".join(failed))
    return "\n".join(lines)


def reproduce_command(opts: Options, catalog_recipe: Recipe | None = None, catalog: str | None = None) -> str:
    """The whole command line that makes a model again ({name} stands for its catalog name): scale, cluster,
    output folder, and the profile, catalog, device, steps and questions where they are not the defaults."""
    words = ["varith", "regenerate", "--models", "{name}", "--scale", opts.recipe.scale, "--cluster", opts.cluster]
    words += ["--out", str(opts.out)]
    if opts.profile:
        words += ["--profile", opts.profile]
    if catalog:
        words += ["--catalog", catalog]
    if opts.device != "auto":
        words += ["--device", opts.device]
    if opts.layout != "flat":
        words += ["--layout", opts.layout]
    base = catalog_recipe or opts.recipe
    if opts.recipe.steps != base.steps:
        words += ["--steps", str(opts.recipe.steps)]
    if opts.recipe.questions != base.questions:
        words += ["--questions", str(opts.recipe.questions)]
    return shlex.join(words).replace("'{name}'", "{name}")
