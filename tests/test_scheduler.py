"""`hpc.scheduler.job_fate` over squeue and sacct outputs recorded on the single-node test cluster of
tools/slurm_local.sh (Slurm 22.05, partition debug, 2 fake GPUs), so the fate logic runs without SLURM.

Recorded with `squeue -h -r --me -o '%i|%T|%r'` and `sacct -n -P -X -o JobID,State -j ...` after:
  9   sbatch --wrap 'sleep 150'                        (running, later cancelled)
  10  sbatch --hold                                     (pending: JobHeldUser)
  11  sbatch --begin=now+3600                          (pending: BeginTime)
  12  sbatch --wrap true                               (completed)
  13  sbatch --wrap 'exit 3'                           (failed)
  14  sbatch --wrap 'sleep 100', then scancel          (cancelled)
  15  sbatch --time=1 --wrap 'sleep 300'               (timeout)
  18  sbatch --array=0-3%1 --wrap 'sleep 60'           (array: one running, the rest JobArrayTaskLimit)
  19  sbatch --dependency=afterok:13                   (DependencyNeverSatisfied)
  20  sbatch --gpus-per-node=4 --ntasks-per-node=4     (PartitionConfig: the node has 2 GPUs)
sbatch refused outright (nothing queued): `--mem=5000G` ("Memory specification can not be satisfied") and
`-p nosuchpart` ("Invalid partition name specified"); those surface as submission errors, not as fates.
"""

from __future__ import annotations

import pickle
import sys

import pytest

from hpc import scheduler
from hpc.launcher import LaunchConfig, Launcher, Task
from hpc.scheduler import Fate, JobResult, QueueEntry, job_fate

SQUEUE_EARLY = """\
11|PENDING|BeginTime
18_0|PENDING|Resources
18_1|PENDING|Resources
18_2|PENDING|Resources
18_3|PENDING|Resources
19|PENDING|DependencyNeverSatisfied
10|PENDING|JobHeldUser
9|RUNNING|None
15|RUNNING|None
"""

SQUEUE_LATER = """\
11|PENDING|BeginTime
18_1|PENDING|JobArrayTaskLimit
18_2|PENDING|JobArrayTaskLimit
18_3|PENDING|JobArrayTaskLimit
19|PENDING|DependencyNeverSatisfied
20|PENDING|PartitionConfig
10|PENDING|JobHeldUser
9|RUNNING|None
18_0|RUNNING|None
"""

SACCT_END = """\
9|CANCELLED by 0
10|CANCELLED by 0
11|CANCELLED by 0
12|COMPLETED
13|FAILED
14|CANCELLED by 0
15|TIMEOUT
19|CANCELLED by 0
18_0|CANCELLED by 0
18_[1-3%1]|CANCELLED by 0
20|PENDING
"""


def test_parse_squeue_keeps_reasons_as_data():
    q = scheduler.parse_squeue(SQUEUE_LATER)
    assert q["9"] == QueueEntry("RUNNING", "None")
    assert q["18_2"] == QueueEntry("PENDING", "JobArrayTaskLimit")
    assert q["20"].never_starts and q["19"].never_starts
    assert not q["10"].never_starts and not q["11"].never_starts and not q["9"].never_starts
    assert scheduler.parse_squeue("") == {}


def test_parse_sacct():
    a = scheduler.parse_sacct(SACCT_END)
    assert a["14"] == "CANCELLED" and a["12"] == "COMPLETED" and a["13"] == "FAILED" and a["15"] == "TIMEOUT"
    assert a["20"] == "PENDING" and a["18_[1-3%1]"] == "CANCELLED"


@pytest.mark.parametrize(
    ("job", "phase", "reason", "never"),
    [
        ("9", "running", None, False),
        ("18_0", "running", None, False),
        ("18_1", "pending", None, False),  # PENDING shows no reason
        ("10", "pending", None, False),
        ("11", "pending", None, False),
        ("19", "pending", "DependencyNeverSatisfied", True),
        ("20", "pending", "PartitionConfig", True),
    ],
)
def test_fate_of_queued_jobs(job, phase, reason, never):
    q = scheduler.parse_squeue(SQUEUE_LATER)
    fate = job_fate(job, q, {}, None)
    assert (fate.phase, fate.reason, fate.never_starts) == (phase, reason, never)


@pytest.mark.parametrize(
    ("job", "acct"),
    [("12", "COMPLETED"), ("13", "FAILED"), ("14", "CANCELLED"), ("15", "TIMEOUT"), ("9", "CANCELLED")],
)
def test_fate_of_jobs_that_left_the_queue(job, acct):
    q, a = scheduler.parse_squeue(SQUEUE_EARLY), scheduler.parse_sacct(SACCT_END)
    q.pop(job, None)  # it left the queue
    assert job_fate(job, q, a, None) == Fate("ended", acct=acct)


def test_fate_without_accounting_or_squeue():
    assert job_fate("13", {}, None, None).phase == "lost"  # no accounting: neither queued nor recorded
    assert job_fate("13", {}, {}, None).phase == "lost"
    assert job_fate("13", None, None, None) == Fate("unknown", reason="squeue unavailable")
    # sacct still says pending for a job squeue no longer lists (a moment after it left): wait
    fate = job_fate("20", {}, scheduler.parse_sacct(SACCT_END), None)
    assert (fate.phase, fate.reason) == ("pending", "sacct: PENDING")


def test_result_speaks_first():
    q = scheduler.parse_squeue(SQUEUE_LATER)
    ok, err = JobResult(True), JobResult(False, "RuntimeError: boom")
    assert job_fate("9", q, {}, ok) == Fate("ended", result=ok)  # COMPLETING with its result written
    assert job_fate("13", {}, {"13": "FAILED"}, err) == Fate("ended", acct="FAILED", result=err)
    assert job_fate("13", None, None, err).phase == "ended"


def test_read_result(tmp_path):
    assert scheduler.read_result(tmp_path / "none.pkl") is None
    p = tmp_path / "r.pkl"
    p.write_bytes(pickle.dumps(("success", 3)))
    assert scheduler.read_result(p) == JobResult(True)
    p.write_bytes(pickle.dumps(("error", "Traceback (most recent call last):\n  ...\nValueError: bad\n")))
    assert scheduler.read_result(p) == JobResult(False, "ValueError: bad")
    p.write_bytes(b"not a pickle")
    assert scheduler.read_result(p) == JobResult(False, "unreadable result")
    assert scheduler.result_path_for_log("/f/17_0_0_log.out") is not None
    assert str(scheduler.result_path_for_log("/f/17_0_0_log.out")) == "/f/17_0_0_result.pkl"
    assert scheduler.result_path_for_log("/f/other.txt") is None


def _raise_value_error():
    raise ValueError("from the job")


def test_result_pickle_of_a_real_local_job(tmp_path):
    """submitit's own result pickle, written by a real (local) job, read with plain pickle."""
    launcher = Launcher(LaunchConfig(cluster="local", folder=tmp_path / "%j", max_parallel=2))
    launcher.submit([Task("bad", _raise_value_error), Task("good", print)])
    launcher.wait(poll_s=0.1, timeout_s=120)
    bad, good = launcher.handles["bad"], launcher.handles["good"]
    assert bad.result() == JobResult(False, "ValueError: from the job") and bad.error() == "ValueError: from the job"
    assert good.result() == JobResult(True) and good.error() is None
    assert scheduler.read_result(scheduler.result_path_for_log(bad.stdout)) == bad.result()


def test_pid_alive():
    import os
    import subprocess

    assert scheduler.pid_alive(os.getpid())
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    assert not scheduler.pid_alive(p.pid) and not scheduler.pid_alive(None)
