"""`varith status`: one line per run under runs/: state, job id, step, last loss, log path.

The run's marker (`runs/<name>/state.json`) speaks first; the scheduler second. A run whose marker says
submitted or running is checked against squeue (still queued/running?) and then sacct (FAILED, CANCELLED,
TIMEOUT...); a job that left the queue without marking its run done shows as failed (also without
accounting: no result, not in squeue). On the local and debug backends the process recorded in the marker is
checked instead. A crash never shows as a hang.

The decision lives in jobs.runs.lifecycle (marker first, then hpc.scheduler.job_fate); this module parses the flags
and formats the rows. The stage column is `varith regenerate`'s pipeline stage (train, verify, ablate, algo,
hub) where one ran. States shown: pending (queued or requeued), running, done, failed, stopped (on purpose by
`varith train --stop-after`; running it again continues), stale (marked done but its artifacts no longer match
the manifest). `--json` prints one JSON object per run instead of the table. A --runs-dir that does not exist
is an error; an empty one has "no runs".
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from arith.errors import InputError, clip
from jobs.runs.lifecycle import RunStatus, collect

HELP = "Show the state of every run under runs/ (markers first, then squeue/sacct)."


def _fmt_loss(loss) -> str:
    return "-" if loss is None else f"{float(loss):.3g}"


def _fmt_step(s: RunStatus) -> str:
    if s.step is None:
        return "-"
    return f"{s.step}/{s.steps}" if s.steps else str(s.step)


def format_table(rows: list[RunStatus]) -> str:
    header = ("run", "state", "stage", "job", "step", "loss", "log")
    lines = [header]
    for s in rows:
        shown = s.detail and s.state in ("failed", "stale", "pending", "stopped")
        state = s.state + (f" ({s.detail})" if shown else "")
        lines.append((s.name, state, s.stage or "-", s.job_id or "-", _fmt_step(s), _fmt_loss(s.loss), s.log or "-"))
    widths = [max(len(r[i]) for r in lines) for i in range(len(header) - 1)]
    out = []
    for r in lines:
        out.append("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1])
    return "\n".join(out)


def add_arguments(parser) -> None:
    parser.add_argument("--runs-dir", default="runs", help="folder holding one folder per run (default: runs)")
    parser.add_argument("--json", action="store_true", help="one JSON object per run instead of a table")


def run(args) -> int:
    runs_dir = Path(args.runs_dir)
    if not runs_dir.exists():
        raise InputError(f"--runs-dir {clip(str(runs_dir))}: no such folder")
    if not runs_dir.is_dir():
        raise InputError(f"--runs-dir {clip(str(runs_dir))}: not a folder")
    rows = collect(runs_dir)
    if args.json:
        for s in rows:
            print(json.dumps(asdict(s)))
        return 0
    if not rows:
        print(f"no runs under {runs_dir}")
        return 0
    print(format_table(rows))
    counts: dict[str, int] = {}
    for s in rows:
        counts[s.state] = counts.get(s.state, 0) + 1
    print(", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    return 0
