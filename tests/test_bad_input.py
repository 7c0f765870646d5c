"""What a user notices on bad or unusual input to predict and classify: one error line, aligned output, streaming."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from arith.errors import InputError, clip
from arith.model import ModelShape, Transformer
from arith.names import parse_name
from arith.vocab import ADD, MUL, SUB
from arith.weights import model_info, save_weights, trained_ops
from jobs.cli import build_parser
from tests.conftest import REPO, assert_one_line_error, varith

TINY = "add_d2_l1_h3_t20_s111111"


def tiny_weights(folder, name: str = TINY, layers: int = 1, heads: int = 3, d_model: int = 16, d_head: int = 4):
    """Untrained weights of a non-published width (d_model 16), saved WITHOUT a train json."""
    shape = ModelShape(n_layers=layers, n_heads=heads, n_ctx=10, d_model=d_model, d_head=d_head, d_mlp=4 * d_model)
    torch.manual_seed(0)
    path = folder / f"{name}.pth"
    save_weights(Transformer(shape), path)
    return path


@pytest.fixture
def tiny(tmp_path):
    return tiny_weights(tmp_path)


# --- non-ASCII digits -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("question, char", [("１２+34", "１"), ("١٢+3", "١"), ("12+３", "３")])
def test_non_ascii_digits_are_one_error_line_naming_the_character(tiny, question, char):
    for proc in (
        varith("predict", "--model", str(tiny), question),
        varith("classify", question),
        varith("classify", stdin=f"12+34\n{question}\n"),
    ):
        assert_one_line_error(proc, f"'{char}'", "not an ASCII digit")


# --- weights without their train json ---------------------------------------------------------------------------


def test_weights_without_train_json_take_their_widths_from_the_tensors(tiny):
    shape, n_digits, config = model_info(tiny)
    assert (shape.d_model, shape.d_head, shape.d_mlp, shape.n_layers, shape.n_heads) == (16, 4, 64, 1, 3)
    assert n_digits == 2 and config["n_digits"] == 2
    proc = varith("predict", "--model", str(tiny), "12+34", "99+99")
    assert proc.returncode == 0, proc.stderr
    assert [len(line) for line in proc.stdout.splitlines()] == [4, 4]


def test_weights_that_do_not_fit_their_name_say_the_train_json_is_missing(tmp_path):
    # one layer of weights under a name that says two layers, and no train json to say otherwise
    path = tiny_weights(tmp_path, name="add_d2_l2_h3_t20_s111111")
    proc = varith("predict", "--model", str(path), "1+1")
    assert_one_line_error(proc, "add_d2_l2_h3_t20_s111111_train.json is missing", "put the train json beside")
    # four heads of weights under a name that says three
    path = tiny_weights(tmp_path, name="add_d2_l1_h3_t30_s111111", heads=4)
    assert_one_line_error(varith("predict", "--model", str(path), "1+1"), "has shape", "_train.json is missing")


# --- long bad input is clipped ----------------------------------------------------------------------------------


def test_clip_keeps_short_text_and_cuts_long_text():
    assert clip("12+34") == "12+34"
    long = "7" * 10_000
    assert len(clip(long)) < 110 and clip(long).startswith("7" * 70) and "10,000 characters" in clip(long)


def test_a_huge_bad_line_is_quoted_clipped(tiny):
    huge = "1" * 3_000_000 + "/2"
    proc = varith("classify", stdin=f"12+34\n{huge}\n")
    assert_one_line_error(proc, "line 2")
    assert len(proc.stderr) < 400
    assert proc.stdout == "S0\n"
    arg = "12+" + "x" * 100_000
    for proc in (varith("classify", arg), varith("predict", "--model", str(tiny), arg)):
        assert_one_line_error(proc, "'x'")
        assert len(proc.stderr) < 400


def test_long_model_names_are_quoted_clipped():
    with pytest.raises(InputError) as err:
        parse_name("add_d2_" + "q" * 5000)
    assert len(str(err.value)) < 300


# --- operations the model was not trained on --------------------------------------------------------------------


def test_trained_ops_follow_the_config_else_the_name():
    assert trained_ops({"perc_add": 100, "perc_sub": 0, "perc_mult": 0}, "x") == (ADD,)
    assert trained_ops({"perc_add": 50, "perc_sub": 50}, "x") == (ADD, SUB)
    assert trained_ops({"perc_add": 0, "perc_sub": 0, "perc_mult": 100}, "x") == (MUL,)
    assert trained_ops({"perc_add": 0, "perc_sub": 100}, "x") == (SUB,)
    assert trained_ops({"n_digits": 2}, "add_d2_l1_h3_t20_s111111") == (ADD,)
    assert trained_ops({}, "sub_d2_l1_h3_t20_s111111") == (SUB,)
    assert trained_ops({}, "mix_d2_l1_h3_t20_s111111") == (ADD, SUB)
    assert trained_ops({}, "mul_d2_l1_h3_t20_s111111") == (MUL,)


def test_predict_warns_once_about_an_untrained_operation(tiny):
    proc = varith("predict", "--model", str(tiny), stdin="12-34\n56-7\n12+3\n")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 3
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "warning" in lines[0] and "subtraction" in lines[0] and "addition only" in lines[0]
    # trained operations: no warning
    assert varith("predict", "--model", str(tiny), "12+34").stderr == ""


# --- blank and empty questions ----------------------------------------------------------------------------------


def test_blank_lines_give_blank_output_lines_in_both_commands(tiny):
    text = "12+34\n\n   \n99+1\n\n"
    out = varith("classify", "--n-digits", "2", stdin=text)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n") == ["S0", "", "", "S2", "", ""]
    out = varith("predict", "--model", str(tiny), stdin=text)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")
    assert len(lines) == 6 and lines[1:3] == ["", ""] and lines[4:] == ["", ""] and len(lines[0]) == 4


@pytest.mark.parametrize("empty", ["", "  "])
def test_an_empty_question_argument_is_an_error_in_both_commands(tiny, empty):
    for proc in (varith("classify", "12+3", empty), varith("predict", "--model", str(tiny), "12+3", empty)):
        assert_one_line_error(proc, "argument 2 is an empty question")
        assert proc.stdout == ""


# --- streaming --------------------------------------------------------------------------------------------------


def test_a_bad_line_in_the_middle_prints_the_answers_before_it(tiny):
    good = [f"{i:02d}+{i:02d}" for i in range(10)]
    text = "\n".join(good * 500 + ["12+ab"] + good) + "\n"
    for args in (["predict", "--model", str(tiny)], ["classify"]):
        proc = varith(*args, stdin=text)
        assert_one_line_error(proc, "line 5001", "'12+ab'")
        assert len(proc.stdout.splitlines()) == 5000


def _reader(stream, lines: queue.Queue):
    for line in stream:
        lines.put(line)
    lines.put(None)


@pytest.mark.parametrize("command", ["predict", "classify"])
def test_answers_stream_before_the_input_ends(tiny, command):
    args = ["--model", str(tiny)] if command == "predict" else ["--n-digits", "2"]
    n_lines = 200_000
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs", command, *args],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    got: queue.Queue = queue.Queue()
    threading.Thread(target=_reader, args=(proc.stdout, got), daemon=True).start()
    try:
        proc.stdin.write("12+34\n99+01\n")
        proc.stdin.flush()
        first = got.get(timeout=120)  # the input is still open: the answer came from the first batch alone
        assert first is not None and first.strip(), proc.stderr
        assert proc.poll() is None
        rest = "".join(f"{i % 100:02d}+{i // 100 % 100:02d}\n" for i in range(n_lines - 2))
        proc.stdin.write(rest)
        proc.stdin.close()
        lines = [first]
        while (line := got.get(timeout=300)) is not None:
            lines.append(line)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
        assert len(lines) == n_lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- help -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["predict", "classify"])
def test_every_flag_has_a_help_text(command):
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    for action in sub._actions:
        assert action.help and action.help != "==SUPPRESS==", action.dest
    if command == "predict":
        device = next(a for a in sub._actions if a.dest == "device")
        assert all(choice in device.help for choice in ("auto", "cpu", "cuda"))
    text = varith(command, "--help").stdout
    assert "standard input" in text and "blank" in text


def test_classify_and_predict_help_mention_ascii_digits():
    for command in ("predict", "classify"):
        assert "ASCII digits" in " ".join(varith(command, "--help").stdout.split())


def test_train_json_is_still_used_when_present(tmp_path):
    path = tiny_weights(tmp_path)
    config = {"n_layers": 1, "n_heads": 3, "d_model": 16, "d_head": 4, "d_mlp_multiplier": 4, "n_digits": 2}
    config |= {"perc_add": 0, "perc_sub": 100}
    (tmp_path / f"{TINY}_train.json").write_text(json.dumps({"Config": config}))
    proc = varith("predict", "--model", str(path), "12+34")
    assert proc.returncode == 0 and "warning" in proc.stderr and "addition questions" in proc.stderr


def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path):
    questions = tmp_path / "q.txt"
    questions.write_text("12+34\n" * 1_000_000)
    with questions.open() as stdin:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jobs", "classify", "--n-digits", "2"],
            cwd=REPO,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout.readline() == b"S0\n"  # like `varith classify < q.txt | head -1`
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=120) == 0
    assert "Traceback" not in err and "BrokenPipe" not in err, err


# --- inputs a new-user audit tried ------------------------------------------------------------------------------


def test_a_missing_weights_file_is_named_as_missing_whatever_its_name(tmp_path):
    """`--model nope.pth` (not a model name) says the file is missing, not that the name is malformed; a folder
    says it is a folder."""
    assert_one_line_error(varith("predict", "--model", "nope.pth", "12+34", cwd=tmp_path), "nope.pth: no such file")
    assert_one_line_error(varith("predict", "--model", ".", "12+34", cwd=tmp_path), "is a folder")


def test_a_bad_train_json_value_names_the_file(tmp_path):
    path = tiny_weights(tmp_path)
    config = {"n_layers": "two", "n_heads": 3, "d_model": 16, "d_head": 4, "n_digits": 2}
    (tmp_path / f"{TINY}_train.json").write_text(json.dumps({"Config": config}))
    proc = varith("predict", "--model", path.name, "12+34", cwd=tmp_path)
    assert_one_line_error(proc, f"{TINY}_train.json", "bad value", "'two'")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
@pytest.mark.parametrize("command", [("classify", "12+34"), ("status", "--runs-dir", ".")])
def test_a_full_output_device_is_one_line_not_a_traceback(tmp_path, command):
    """`varith classify 12+34 > /dev/full`: exit 1 and one line saying the output could not be written."""
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "jobs", *command], cwd=tmp_path, stdout=full, stderr=subprocess.PIPE, text=True
        )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0], proc.stderr


def test_cluster_flags_are_checked_before_any_work(tmp_path, tiny):
    """A scheduler address without a port, and a thread or worker count below one, are one line each; the address
    is refused before a Client exists (a half-made Client printed a traceback ten seconds later)."""
    proc = varith("verify", str(tiny), "--suite", "handpicked", "--scheduler", "notaurl", cwd=tmp_path)
    assert_one_line_error(proc, "tcp://notaurl", "HOST:PORT")
    assert not list(tmp_path.glob("*.zarr")) and not list(tiny.parent.glob("*.zarr"))
    for flag in ("--torch-threads", "--workers"):
        proc = varith("verify", str(tiny), "--suite", "handpicked", "--cluster", "none", flag, "0", cwd=tmp_path)
        assert_one_line_error(proc, flag, "at least 1")


def test_regenerate_checks_its_profile_and_fetch_its_hub_folder(tmp_path):
    name = "add_d6_l2_h3_t15K_s372001"
    for cluster in ("slurm", "local"):
        proc = varith("regenerate", "--models", name, "--profile", "nope.toml", "--cluster", cluster, "--dry-run",
                      cwd=tmp_path)  # fmt: skip
        assert_one_line_error(proc, "no such file" if cluster == "slurm" else "--profile is read by --cluster slurm")
    assert_one_line_error(varith("fetch", name, "--hub", "no_hub", cwd=tmp_path), "--hub no_hub: no such folder")


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (("--lr", "-1"), "lr (--lr) must be positive, got -1.0"),
        (("--batch-size", "0"), "batch_size (--batch-size) must be positive, got 0"),
        (("--steps", "0"), "--steps: must be at least 1, got 0"),
        (("--stop-after", "0"), "--stop-after: must be at least 1, got 0"),
    ],
)
def test_a_bad_training_setting_names_its_flag(tmp_path, flags, named):
    proc = varith("train", "add_d2_l1_h3_t300_s123456", "--out", "runs", *flags, cwd=tmp_path)
    assert_one_line_error(proc, named)
    assert not (tmp_path / "runs").exists()
