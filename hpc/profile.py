"""Reading settings files (profiles, sweep files): one place for the checks a user's TOML goes through, and
the SLURM settings of a profile.

`read_toml` names a folder as a folder, a missing file as missing and bad TOML by its first error line;
`check_keys` names every unknown key with the closest known one ("did you mean ..."), so a misspelt setting is
never silently ignored.

`load_profile(path)` reads a profile TOML into a `Profile`: its `[slurm]` table as `SlurmSettings` (required
partition, time, mem, cpus_per_task, gpus_per_node) and its `[dask]` table as written. `resolve_slurm` is the
one precedence for a sweep: profile < sweep file [slurm] table < command-line flags.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from arith.errors import InputError


def read_toml(path: str | Path, what: str) -> dict:
    """The TOML table in `path`; `what` names the file in errors ("profile", "sweep file")."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} {path}: is a folder, not a TOML file (give the file, e.g. {path}/NAME.toml)")
    if not path.is_file():
        raise InputError(f"{what} {path}: no such file")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{what} {path}: not valid TOML ({str(exc).splitlines()[0]})") from None
    except OSError as exc:
        raise InputError(f"{what} {path}: unreadable ({exc.strerror or type(exc).__name__})") from None


def closest(word: str, known: Iterable[str]) -> str | None:
    match = difflib.get_close_matches(word, sorted(known), n=1, cutoff=0.6)
    return match[0] if match else None


def check_keys(raw: dict, known: Iterable[str], where: str) -> None:
    """InputError naming the unknown keys of `raw`, each with the closest known key when there is one."""
    known = set(known)
    unknown = sorted(set(raw) - known)
    if not unknown:
        return
    parts = []
    for key in unknown:
        guess = closest(key, known)
        parts.append(f"{key!r}" + (f" (did you mean {guess!r}?)" if guess else ""))
    raise InputError(f"{where}: unknown key(s) {', '.join(parts)}; known: {', '.join(sorted(known))}")


# ------------------------------------------------------------------------------------------------ SLURM

# keys a profile's [slurm] table (or top level) must set / may set
PROFILE_REQUIRED = ("partition", "time", "mem", "cpus_per_task", "gpus_per_node")
PROFILE_OPTIONAL = (
    "account",
    "qos",
    "tasks_per_node",
    "nodes",
    "array_parallelism",
    "max_num_timeout",
    "signal_delay_s",
    "extra_sbatch",
    "setup",
)
# the settings `varith sweep` also takes as flags (--partition, --time, ...) -> help
SLURM_FLAG_HELP = {
    "partition": "SLURM partition",
    "account": "SLURM account to charge",
    "qos": "SLURM quality of service",
    "time": "wall time per job, e.g. 90, 1:30:00 or 2-00:00:00 (minutes or SLURM's forms)",
    "mem": "memory per node, e.g. 16G or 4000M",
    "cpus_per_task": "CPU cores per task (also torch's threads per task)",
    "gpus_per_node": "GPUs per node (one task per GPU)",
    "tasks_per_node": "tasks per node (DDP ranks; defaults to gpus_per_node when GPUs are asked for)",
    "nodes": "nodes per job",
    "max_num_timeout": "requeues after a time-out or preemption before the run counts as failed",
}


@dataclass(frozen=True)
class SlurmSettings:
    """What goes into `#SBATCH` lines. `time_min` in minutes, `mem_gb` per node. With GPUs, one task per GPU
    (`tasks_per_node` is then `gpus_per_node`); without, `tasks_per_node` CPU ranks (gloo DDP when > 1)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: int = 60
    mem_gb: float = 4.0
    cpus_per_task: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int = 1
    nodes: int = 1
    array_parallelism: int = 256
    max_num_timeout: int = 3
    signal_delay_s: int = 90
    extra_sbatch: tuple[str, ...] = ()
    setup: tuple[str, ...] = ()

    def __post_init__(self):
        for name in ("time_min", "cpus_per_task", "tasks_per_node", "nodes", "array_parallelism"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InputError(f"slurm setting {name} must be a positive whole number, got {v!r}")
        for name in ("gpus_per_node", "max_num_timeout", "signal_delay_s"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise InputError(f"slurm setting {name} must be a whole number >= 0, got {v!r}")
        if not isinstance(self.mem_gb, int | float) or self.mem_gb <= 0:
            raise InputError(f"slurm setting mem must be positive, got {self.mem_gb!r}")
        if self.gpus_per_node and self.tasks_per_node not in (1, self.gpus_per_node):
            raise InputError(
                f"tasks_per_node {self.tasks_per_node} with gpus_per_node {self.gpus_per_node}: "
                "with GPUs it is one task per GPU (leave tasks_per_node out)"
            )
        for line in self.extra_sbatch:
            parse_sbatch_line(line)

    @property
    def ntasks_per_node(self) -> int:
        return self.gpus_per_node if self.gpus_per_node else self.tasks_per_node

    @property
    def world_size(self) -> int:
        return self.ntasks_per_node * self.nodes

    @property
    def extra_options(self) -> dict[str, str | bool]:
        """`extra_sbatch` as sbatch options ({"constraint": "a100", "exclusive": True})."""
        return dict(parse_sbatch_line(line) for line in self.extra_sbatch)


@dataclass(frozen=True)
class Profile:
    """A profile TOML: the `[slurm]` table as SlurmSettings and the `[dask]` table as written (`dask` parses it)."""

    slurm: SlurmSettings
    raw_dask: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    where: str = "profile"

    @property
    def dask(self) -> DaskProfile:
        return DaskProfile.from_dict(dict(self.raw_dask), self.where)


def parse_sbatch_line(line: str) -> tuple[str, str | bool]:
    """`--constraint=a100`, `--exclusive`, `#SBATCH --mail-type END` -> (key, value); short options are
    refused."""
    text = str(line).strip()
    if text.startswith("#SBATCH"):
        text = text[len("#SBATCH") :].strip()
    if not text.startswith("--") or len(text) < 3:
        raise InputError(f"extra sbatch line {line!r}: use the long form, e.g. --constraint=a100")
    body = text[2:]
    value: str | bool
    if "=" in body:
        key, value = body.split("=", 1)
    elif " " in body:
        key, value = body.split(None, 1)
    else:
        key, value = body, True
    key = key.strip()
    if not re.fullmatch(r"[a-z][a-z0-9-]*", key):
        raise InputError(f"extra sbatch line {line!r}: {key!r} is not an sbatch option name")
    return key, value.strip() if isinstance(value, str) else value


def parse_time_min(value: Any) -> int:
    """Minutes from an int, or sbatch's forms `MM`, `HH:MM:SS`, `D-HH:MM:SS`, `D-HH`."""
    if isinstance(value, bool):
        raise InputError(f"time {value!r}: expected minutes or HH:MM:SS")
    if isinstance(value, int):
        minutes = value
    else:
        text = str(value).strip()
        m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
        if not m:
            raise InputError(f"time {value!r}: expected minutes or HH:MM:SS (or D-HH:MM:SS)")
        days, a, b, c = m.groups()
        if days is None and b is None:  # "MM"
            minutes = int(a)
        elif days is not None and b is None:  # "D-HH"
            minutes = int(days) * 1440 + int(a) * 60
        else:
            if c is None:  # "HH:MM" with a day, "MM:SS" without (sbatch's rule)
                h, mi, s = (int(a), int(b), 0) if days is not None else (0, int(a), int(b))
            else:
                h, mi, s = int(a), int(b), int(c)
            minutes = int(days or 0) * 1440 + h * 60 + mi + (1 if s else 0)
    if minutes < 1:
        raise InputError(f"time {value!r}: must be at least one minute")
    return minutes


def parse_mem_gb(value: Any) -> float:
    """GB from a number (GB) or text like `16G`, `16GB`, `4000M`, `1T`."""
    if isinstance(value, bool):
        raise InputError(f"mem {value!r}: expected e.g. 16G")
    if isinstance(value, int | float):
        gb = float(value)
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*", str(value), flags=re.IGNORECASE)
        if not m:
            raise InputError(f"mem {value!r}: expected e.g. 16G, 4000M or a number of GB")
        scale = {"": 1.0, "K": 1 / 1024**2, "M": 1 / 1024, "G": 1.0, "T": 1024.0}[m.group(2).upper()]
        gb = float(m.group(1)) * scale
    if gb <= 0:
        raise InputError(f"mem {value!r}: must be positive")
    return gb


def _settings_kwargs(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Profile/TOML keys -> SlurmSettings fields (time -> time_min, mem -> mem_gb), checked."""
    check_keys(dict(raw), set(PROFILE_REQUIRED) | set(PROFILE_OPTIONAL), where)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "time":
            out["time_min"] = parse_time_min(value)
        elif key == "mem":
            out["mem_gb"] = parse_mem_gb(value)
        elif key in ("extra_sbatch", "setup"):
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise InputError(f"{where}: {key} must be a list of strings")
            out[key] = tuple(value)
        elif key in ("partition", "account", "qos"):
            if not isinstance(value, str):
                raise InputError(f"{where}: {key} must be a string")
            out[key] = value or None
        else:
            if not isinstance(value, int) or isinstance(value, bool):
                raise InputError(f"{where}: {key} must be a whole number, got {value!r}")
            out[key] = value
    return out


def slurm_from_dict(raw: Mapping[str, Any], where: str = "profile") -> SlurmSettings:
    """A complete [slurm] table -> SlurmSettings (missing or unknown keys: InputError naming them)."""
    missing = [k for k in PROFILE_REQUIRED if k not in raw]
    if missing:
        raise InputError(
            f"{where}: missing key(s) {', '.join(missing)} (a profile needs {', '.join(PROFILE_REQUIRED)})"
        )
    return SlurmSettings(**_settings_kwargs(raw, where))


def load_profile(path: str | Path) -> Profile:
    """A TOML profile: a `[slurm]` table (or top-level keys) with at least partition, time, mem,
    cpus_per_task and gpus_per_node, and an optional `[dask]` table."""
    data = read_toml(path, "profile")
    dask = data.get("dask", {})
    if not isinstance(dask, dict):
        raise InputError(f"profile {path}: [dask] must be a table")
    raw = data["slurm"] if isinstance(data.get("slurm"), dict) else {k: v for k, v in data.items() if k != "dask"}
    profile = Profile(slurm_from_dict(raw, str(path)), MappingProxyType(dict(dask)), f"profile {path}")
    profile.dask  # noqa: B018 - checks the [dask] table now: one line for a bad key before anything starts
    return profile


def load_slurm(path: str | Path) -> SlurmSettings:
    """The SlurmSettings of a profile TOML."""
    return load_profile(path).slurm


def override_settings(settings: SlurmSettings, overrides: Mapping[str, Any], where: str) -> SlurmSettings:
    """`overrides` in profile vocabulary (time, mem, ...; None = keep; extra_sbatch/setup lines are
    appended)."""
    kw = _settings_kwargs({k: v for k, v in overrides.items() if v is not None}, where)
    for key in ("extra_sbatch", "setup"):
        if key in kw:
            kw[key] = getattr(settings, key) + kw[key]
    return replace(settings, **kw)


def resolve_slurm(
    profile: str | Path | None, table: Mapping[str, Any] | None, flags: Mapping[str, Any]
) -> SlurmSettings:
    """The one precedence: the profile file (or the defaults), then a sweep file's [slurm] table, then the
    command-line flags."""
    settings = load_slurm(profile) if profile is not None else SlurmSettings()
    if table:
        if not isinstance(table, Mapping):
            raise InputError("sweep file: [slurm] must be a table")
        settings = override_settings(settings, table, "sweep file [slurm]")
    return override_settings(settings, flags, "command line")


# ------------------------------------------------------------------------------------------------ dask


def _minutes(value: Any, what: str) -> float:
    """Minutes from a number (minutes) or a duration like "10m", "90s", "1h"."""
    if isinstance(value, bool):
        raise InputError(f"{what}: expected minutes or a duration like '10m', got {value!r}")
    if isinstance(value, int | float):
        minutes = float(value)
    else:
        from dask.utils import parse_timedelta

        try:
            minutes = parse_timedelta(str(value), default="m") / 60.0
        except (ValueError, KeyError):
            raise InputError(f"{what}: expected minutes or a duration like '10m', got {value!r}") from None
    if minutes < 0:
        raise InputError(f"{what}: must not be negative, got {value!r}")
    return minutes


@dataclass(frozen=True)
class DaskProfile:
    """The `[dask]` table of a profile, checked: worker jobs (max_jobs, adapt: workers that retire at their
    lifetime are replaced; processes per CPU job), their lifetime (margin kept free at the end of the walltime,
    stagger of the retirement times; minutes or "10m"), networking (interface, scheduler_host, death_timeout,
    dashboard_address), folders (local_directory, log_directory), job_name and the compute nodes' python."""

    max_jobs: int = 16
    adapt: bool = True
    processes: int | None = None
    lifetime_margin: float | None = None  # minutes
    lifetime_stagger: float | None = None  # minutes
    interface: str | None = None
    scheduler_host: str | None = None
    death_timeout: int | None = None  # unset: the site's dask.config (jobqueue.yaml), as dask-jobqueue does
    local_directory: str | None = None
    log_directory: str | None = None
    job_name: str | None = None  # unset: jobqueue.slurm.name of the site's dask.config
    python: str | None = None
    dashboard_address: str | None = None  # unset: the site's dask.config (distributed's default :8787)

    @classmethod
    def from_dict(cls, raw: dict, where: str) -> DaskProfile:
        check_keys(raw, [f.name for f in fields(cls)], f"{where} [dask]")
        kw: dict[str, Any] = {}
        for key, value in raw.items():
            if key in ("max_jobs", "processes", "death_timeout"):
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise InputError(f"{where} [dask]: {key} must be a positive whole number, got {value!r}")
                kw[key] = value
            elif key == "adapt":
                if not isinstance(value, bool):
                    raise InputError(f"{where} [dask]: adapt must be true or false, got {value!r}")
                kw[key] = value
            elif key in ("lifetime_margin", "lifetime_stagger"):
                kw[key] = _minutes(value, f"{where} [dask] {key}")
            else:
                if not isinstance(value, str) or not value:
                    raise InputError(f"{where} [dask]: {key} must be a non-empty string, got {value!r}")
                kw[key] = value
        return cls(**kw)
