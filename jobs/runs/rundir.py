"""RunDir: every file name of a run, in one place.

A run folder `runs/<name>/` holds the model's artifacts (named by `arith.names.artifact_path`: `<name>.pth`,
`<name>_train.json`, `<name>_accuracy.json`, `<name>_behavior.json`, `<name>_maths.json`, `<name>.zarr`) and
the bookkeeping of its training: `progress.json` (step, steps, loss while training), `checkpoints/` (accelerate
states), `state.json` (the marker: where the run stands), `manifest.json` (sha256 of the artifacts) and the
marker's lock file, and `stage.json` (`varith regenerate`: the model's pipeline stage), and the quanta maps
`<name>_quanta_<view>.svg/.png`, each owned by the one stage that draws it (`QUANTA_OWNERS`: the algorithm
search owns the `algo` view, node ablation every other view), so a stage replaces only its own maps. Everything
else asks a RunDir for a path instead of spelling a name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from arith.manifest import MANIFEST
from arith.names import artifact_path, name_of_weights, sidecar_path

MARKER = "state.json"
PROGRESS = "progress.json"
CHECKPOINTS = "checkpoints"
LOCK = ".state.lock"
STAGE = "stage.json"
SUBMITIT = ".submitit"
QUANTA_SUFFIXES = (".svg", ".png")
QUANTA_OWNERS = {"algo": ("algo",)}  # stage -> the views it draws; "ablate" owns every view not listed here


def quanta_owner(view: str) -> str:
    """The stage that draws (and alone may remove) the quanta map of `view`."""
    return next((stage for stage, views in QUANTA_OWNERS.items() if view in views), "ablate")


def submitit_folder(runs_dir: str | Path, cluster: str) -> Path:
    """submitit's log and pickle folder under a runs folder: `.submitit/<the backend's folder_tag>` (`%j`, the
    job id, expanded per job; `local` on the local backend, hpc.launcher.LocalBackend)."""
    from hpc.launcher import backend

    return Path(runs_dir).absolute() / SUBMITIT / backend(cluster).folder_tag


@dataclass(frozen=True)
class RunDir:
    """A run's folder and its model name (the folder's name unless the artifacts are named otherwise, as in a
    flat hub folder)."""

    path: Path
    model: str = ""

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))
        if not self.model:
            object.__setattr__(self, "model", self.path.name)

    @classmethod
    def of(cls, runs_dir: str | Path, name: str) -> RunDir:
        return cls(Path(runs_dir) / name, name)

    @classmethod
    def beside(cls, weights: str | Path) -> RunDir:
        """The run whose weights are `weights` (its folder is theirs)."""
        return cls(Path(weights).parent, name_of_weights(weights))

    @property
    def name(self) -> str:
        return self.model

    def artifact(self, kind: str) -> Path:
        return artifact_path(self.path, self.model, kind)

    @property
    def weights(self) -> Path:
        return self.artifact("weights")

    @property
    def train_json(self) -> Path:
        return self.artifact("train")

    @property
    def accuracy_json(self) -> Path:
        return self.artifact("accuracy")

    @property
    def behavior_json(self) -> Path:
        return self.artifact("behavior")

    @property
    def maths_json(self) -> Path:
        return self.artifact("maths")

    @property
    def store(self) -> Path:
        return self.artifact("store")

    @property
    def training_artifacts(self) -> tuple[Path, Path]:
        """What a finished training run must have (listed in its manifest)."""
        return (self.weights, self.train_json)

    @property
    def derived_artifacts(self) -> tuple[Path, ...]:
        """What the later stages derive from the weights (verify, ablate, algo): stale once the weights change."""
        return (self.accuracy_json, self.behavior_json, sidecar_path(self.behavior_json), self.maths_json, self.store)

    @property
    def progress(self) -> Path:
        return self.path / PROGRESS

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def marker(self) -> Path:
        return self.path / MARKER

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST

    @property
    def lock(self) -> Path:
        return self.path / LOCK

    @property
    def stage(self) -> Path:
        """`varith regenerate`'s record: the stage the model is in and the stamps of the stages it finished."""
        return self.path / STAGE

    def quanta_maps(self, stage: str | None = None) -> list[Path]:
        """The quanta maps in the run folder (`<name>_quanta_<view>.svg/.png`), sorted; with `stage`, only those
        that stage owns (quanta_owner)."""
        prefix = f"{self.model}_quanta_"
        out = []
        for p in self.path.glob(f"{prefix}*"):
            if not (p.is_file() and p.suffix in QUANTA_SUFFIXES):
                continue
            view = p.name[len(prefix) : -len(p.suffix)]
            if view and (stage is None or quanta_owner(view) == stage):
                out.append(p)
        return sorted(out)

    def train_paths(self):
        """Where training writes (arith.train.TrainPaths): weights, train json, checkpoints."""
        from arith.train import TrainPaths

        return TrainPaths(self.weights, self.train_json, self.checkpoints)

    def is_run(self) -> bool:
        """A run folder has a marker or a manifest."""
        return self.marker.is_file() or self.manifest.is_file()


def run_dirs(runs_dir: str | Path) -> list[RunDir]:
    """The runs under `runs_dir` (folders with a marker or a manifest), sorted by name; hidden folders
    (.submitit) excluded."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    found = (RunDir(p) for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    return sorted((r for r in found if r.is_run()), key=lambda r: r.path.name)
