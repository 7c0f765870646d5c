"""A damaged verification store never yields a verdict: every damage ends in the true result or one error line.

One finished exhaustive store (2-digit addition and subtraction, random weights: thousands of failures, 20
blocks of 1,000 questions) is made once; each test damages a copy of it (a chunk of each array deleted,
truncated or garbled; each metadata file deleted, truncated or garbled) and runs the driver again on one
shared LocalCluster. The result must equal the undamaged run's report, or the driver must refuse with one
InputError line naming the damage and `--fresh`, after which `--fresh` gives the undamaged report.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from analysis.accuracy import accuracy_report
from arith.errors import InputError
from arith.files import sha256_file
from arith.verify import ExhaustiveSuite
from arith.vocab import ADD, SUB
from arith.weights import model_info
from hpc.cluster import ClusterSpec, open_cluster
from hpc.store import StoreDamage
from jobs.stages.verify import VerifyWork, verify_distributed
from jobs.stages.verify_store import ALL_ARRAYS, DATA_ARRAYS, make_fingerprint, prepare_suite
from tests.conftest import assert_one_line_error
from tests.conftest import varith as _varith
from tests.test_verify_dask import FP32, MIXED, make_random_model, reference_report

SUITE = ExhaustiveSuite(2, (ADD, SUB), block_size=1000)  # 20 blocks: 0-9 addition, 10-19 subtraction
CAP = 16
KINDS = ("delete", "truncate", "garble")


def varith(*args: str) -> subprocess.CompletedProcess:
    return _varith("verify", *args)


def damage(path: Path, kind: str) -> None:
    """Delete the file, cut it to half its length, or overwrite its middle third with other bytes."""
    assert path.is_file(), path
    data = path.read_bytes()
    if kind == "delete":
        path.unlink()
    elif kind == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:
        a, b = len(data) // 3, max(len(data) // 3 + 1, 2 * len(data) // 3)
        noise = np.random.default_rng(len(data)).integers(128, 256, b - a, dtype=np.uint8).tobytes()
        path.write_bytes(data[:a] + noise + data[b:])


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_random_model(tmp_path_factory.mktemp("damage"), MIXED, d_model=32, d_head=8, seed=3)


@pytest.fixture(scope="module")
def cluster1():
    with open_cluster(ClusterSpec(kind="local", workers=1, torch_threads=1, preload=("jobs.stages.verify",))) as handle:
        yield handle


@pytest.fixture(scope="module")
def truth(model) -> dict:
    """The undamaged report, computed in one process without any store."""
    return reference_report(model, SUITE)


def open_store(model: Path, root: Path, fresh: bool = False, log=None) -> VerifyWork:
    shape, _n, _cfg = model_info(model)
    sha = sha256_file(model)
    fp = make_fingerprint(sha, SUITE.fingerprint(), "reference", "fp32", CAP)
    store = prepare_suite(root, SUITE.name, fp, SUITE.n_blocks, SUITE.n_digits, CAP, fresh=fresh, suite=SUITE, log=log)
    return VerifyWork(str(model.resolve()), sha, shape, SUITE, store, precision="fp32")


def run(spec: VerifyWork, cluster) -> dict:
    counts = verify_distributed(cluster.client, spec, progress=False)
    counts.choice = FP32
    extra = {"weights_sha256": spec.weights_sha256, "mode": spec.mode}
    return accuracy_report(counts, SUITE, Path(spec.weights).stem, extra)


@pytest.fixture(scope="module")
def pristine(model, cluster1, truth, tmp_path_factory) -> Path:
    """A finished, undamaged store."""
    root = tmp_path_factory.mktemp("pristine") / f"{MIXED}.zarr"
    report = run(open_store(model, root), cluster1)
    assert report == truth and report["failed"] > 9000
    return root


@pytest.fixture
def copy(pristine, tmp_path) -> Path:
    root = tmp_path / pristine.name
    shutil.copytree(pristine, root)
    return root


def chunk(root: Path, name: str, k: int) -> Path:
    ndim = {
        "tested": 3,
        "failed": 3,
        "wrong_pos": 2,
        "fail_x": 3,
        "fail_y": 3,
        "fail_op": 2,
        "fail_pred": 3,
        "scoring": 2,
    }
    return Path(root, "verify", SUITE.name, name, "c", str(k), *(["0"] * (ndim.get(name, 1) - 1)))


# ------------------------------------------------------------------------------------------------ chunks


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ALL_ARRAYS)
def test_each_damaged_chunk_makes_its_block_pending(model, copy, name, kind):
    """Found when the driver opens the store: the block is redone, with one line saying which and why."""
    k = 13  # a subtraction block: thousands of failures, the SUB and NEG rows both in use
    damage(chunk(copy, name, k), kind)
    log = io.StringIO()
    spec = open_store(model, copy, log=log)
    assert spec.group.pending() == [k]
    if name == "done" and kind == "delete":
        assert log.getvalue() == ""  # a missing done flag just means "not done"
        return
    if name == "done":
        why = "done flag unreadable"
    else:
        why = f"{name} chunk {'missing' if kind == 'delete' else 'unreadable'}"
    assert log.getvalue() == f"store {spec.group.location}: block {k} failed its checks ({why}); redoing it\n"


@pytest.mark.parametrize("kind", KINDS)
def test_every_array_damaged_at_once_ends_in_the_true_result(model, cluster1, truth, copy, kind, capsys):
    """Each array damaged in another block; the reduction is the undamaged run's, nothing double counted."""
    blocks = {name: 2 * i + 1 for i, name in enumerate(ALL_ARRAYS)}  # 1, 3, ..., 17
    for name, k in blocks.items():
        damage(chunk(copy, name, k), kind)
    spec = open_store(model, copy)
    assert spec.group.pending() == sorted(blocks.values())
    assert run(spec, cluster1) == truth
    err = capsys.readouterr().err
    assert err.count("failed their checks") == 1 and "redoing them" in err
    assert spec.group.pending() == []


def test_damage_after_the_open_is_caught_in_the_reduction(model, cluster1, truth, copy, capsys):
    """A chunk lost between the driver's open and the reduction: read_counts refuses, the driver redoes it."""
    spec = open_store(model, copy)
    assert spec.group.pending() == []
    damage(chunk(copy, "failed", 4), "delete")
    damage(chunk(copy, "tested", 15), "garble")
    with pytest.raises(StoreDamage) as info:
        spec.group.read_counts()
    assert info.value.problems == {4: "failed chunk missing", 15: "tested chunk unreadable"}
    assert "\n" not in str(info.value)
    assert run(spec, cluster1) == truth
    assert "blocks 4, 15 failed their checks" in capsys.readouterr().err


@pytest.mark.parametrize(
    "name, value, why",
    [
        ("tested", None, "tested 999 ADD questions, the block has 1,000"),
        ("failed", lambda a: a + 1, "failed > tested"),
        ("wrong_pos", lambda a: a * 0 + 5000, "wrong answer positions > failed"),
        ("n_fail_kept", lambda a: a * 0 + 17, "n_fail_kept 17"),
        ("fail_x", lambda a: a * 0 + 10, "failing examples out of range"),
        ("scoring", lambda a: a * 0 + [5000.0, 0.0], "re-check counts out of range"),
        ("scoring", lambda a: a * 0 + [0.0, -1.0], "negative logit error bound"),
    ],
)
def test_wrong_numbers_in_intact_chunks_are_caught(model, copy, name, value, why):
    """Chunks that decode but hold impossible numbers (as a buggy writer would leave them)."""
    import zarr

    arr = zarr.open_array(store=str(copy), path=f"verify/{SUITE.name}/{name}", mode="r+")
    arr = arr.with_config({"write_empty_chunks": True})
    k = 2
    row = np.asarray(arr[k])
    if name == "tested":  # one question fewer than the block holds
        row = row.copy()
        row[0, np.flatnonzero(row[0])[0]] -= 1
    else:
        row = value(row)
    arr[k] = row
    log = io.StringIO()
    spec = open_store(model, copy, log=log)
    assert spec.group.pending() == [k]
    assert why in log.getvalue(), log.getvalue()


def test_a_perfect_models_zero_rows_pass_but_a_lost_zero_chunk_does_not(model, tmp_path):
    """Zero failures are legitimate, yet a deleted `failed` chunk must not read back as zero failures.

    The rows a perfect model's tasks write: each block's true question counts, no failures, no examples.
    """
    from arith.verify import BlockCounts

    root = tmp_path / "perfect.zarr"
    store = open_store(model, root).group
    for k in range(SUITE.n_blocks):
        x, y, op = SUITE.block(k)
        every = evaluate_block_counts(x, y, op)
        store.write_block(k, BlockCounts(every.tested, 0 * every.failed, 0 * every.wrong_pos, *empty_examples()))
    assert int(store.read_counts().failed.sum()) == 0
    log = io.StringIO()
    assert open_store(model, root, log=log).group.pending() == [] and log.getvalue() == ""
    for name in DATA_ARRAYS[1:]:  # everything but `tested` is all zero in these rows
        damage(chunk(root, name, 1), "delete")
    assert open_store(model, root, log=log).group.pending() == [1]
    assert "block 1 failed its checks (failed chunk missing)" in log.getvalue()


def evaluate_block_counts(x, y, op):
    """Counts of a block in which every question fails (the failure rule does not matter here)."""
    from arith.verify import count_block

    failed = np.ones(len(op), dtype=bool)
    wrong = np.ones((len(op), SUITE.n_digits + 2), dtype=bool)
    pred = np.zeros((len(op), SUITE.n_digits + 2), dtype=np.uint8)
    return count_block(x, y, op, failed, wrong, pred, CAP)


def empty_examples():
    n = SUITE.n_digits
    return (
        np.zeros((0, n), np.uint8),
        np.zeros((0, n), np.uint8),
        np.zeros(0, np.uint8),
        np.zeros((0, n + 2), np.uint8),
    )


# ------------------------------------------------------------------------------------------------ metadata

SUITE_DIR = f"verify/{SUITE.name}"
METADATA = {
    "root": "zarr.json",
    "verify group": "verify/zarr.json",
    "suite group": f"{SUITE_DIR}/zarr.json",
    "failed array": f"{SUITE_DIR}/failed/zarr.json",
    "done array": f"{SUITE_DIR}/done/zarr.json",
}
# what each damage ends in without --fresh: "true" (the true result straight away) or "refused" (one line)
OUTCOME = {
    ("root", "delete"): "true",  # zarr writes the root group's metadata again; nothing below it changed
    ("verify group", "delete"): "true",  # likewise for `verify`
    ("suite group", "delete"): "true",  # the fingerprint is gone: the suite is rebuilt and computed again
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("what", METADATA)
def test_damaged_metadata_gives_the_true_result_or_one_line_then_fresh(
    model, cluster1, truth, copy, what, kind, capsys
):
    damage(copy / METADATA[what], kind)
    if OUTCOME.get((what, kind)) == "true":
        assert run(open_store(model, copy), cluster1) == truth
        return
    with pytest.raises(InputError) as info:
        open_store(model, copy)
    message = str(info.value)
    assert "\n" not in message and "--fresh" in message and "damaged" in message, message
    assert METADATA[what] in message or what == "root", message
    assert run(open_store(model, copy, fresh=True), cluster1) == truth


@pytest.mark.parametrize("how", ["dropped", "garbled", "stale"])
def test_damaged_consolidated_metadata_is_dropped(model, cluster1, truth, copy, how):
    """The consolidated copy in the root zarr.json is a cache the driver drops on open and writes at the end."""
    import zarr

    meta_path = copy / "zarr.json"
    meta = json.loads(meta_path.read_text())
    assert "consolidated_metadata" in meta
    if how == "dropped":
        del meta["consolidated_metadata"]
    elif how == "garbled":
        meta["consolidated_metadata"] = {"kind": "inline", "must_understand": False, "metadata": {"x": [1, "?"]}}
    else:  # well-formed, but describes another shape
        entry = meta["consolidated_metadata"]["metadata"][f"{SUITE_DIR}/failed"]
        entry["shape"] = [3, 4, 16]
    meta_path.write_text(json.dumps(meta))
    assert run(open_store(model, copy), cluster1) == truth
    consolidated = zarr.open_group(str(copy), mode="r", use_consolidated=True)
    assert consolidated[f"{SUITE_DIR}/failed"].shape == (20, 4, 16)


def test_fresh_never_rewrites_a_folder_that_is_not_a_store(model, copy):
    (copy / "notes.txt").write_text("mine")
    damage(copy / "zarr.json", "garble")
    with pytest.raises(InputError, match="holds more than a varith store"):
        open_store(model, copy, fresh=True)
    assert (copy / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------------------------------ the CLI


def test_cli_redoes_damaged_blocks_and_refuses_damaged_metadata_until_fresh(model, tmp_path):
    """The issue's case end to end: deleting a `failed` chunk of a finished run used to print "0 failed"."""
    store, out = tmp_path / "cli.zarr", tmp_path / "acc.json"
    args = [str(model), "--exhaustive", "--block-size", "1000", "--store", str(store), "--out", str(out)]
    first = varith(*args, "--workers", "1")  # with progress on: in a log, plain lines with whole numbers
    assert first.returncode == 0, first.stderr
    assert "\r" not in first.stderr and "e+0" not in first.stderr
    assert "blocks: 20/20 blocks (100%), questions 20,000, failed " in first.stderr, first.stderr
    truth = out.read_bytes()
    assert set(json.loads(truth)) == {"exhaustive"}

    damage(chunk(store, "failed", 3), "delete")
    damage(chunk(store, "done", 5), "garble")
    again = varith(*args, "--workers", "1", "--no-progress")
    assert again.returncode == 0, again.stderr
    lines = [ln for ln in again.stderr.splitlines() if ln.strip()]
    assert lines == [
        f"store {store}/verify/exhaustive: blocks 3, 5 failed their checks "
        "(3: failed chunk missing; 5: done flag unreadable); redoing them"
    ], again.stderr
    assert "18 already done" in again.stdout
    assert out.read_bytes() == truth

    (store / "verify" / "zarr.json").write_text('{"zarr_format": 3, "node_')
    refused = varith(*args, "--no-progress")
    assert_one_line_error(refused, f"{store}/verify/zarr.json is damaged", "--fresh")
    fresh = varith(*args, "--workers", "1", "--no-progress", "--fresh")
    assert fresh.returncode == 0, fresh.stderr
    assert out.read_bytes() == truth
