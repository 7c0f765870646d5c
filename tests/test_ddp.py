"""The same training code runs DDP when started with torch.distributed environment variables (gloo on CPU)."""

import json
import os
import socket
import subprocess
import sys

import torch

from tests.conftest import REPO

ARGS = ["--d-model", "32", "--d-head", "8", "--lr", "1e-3", "--no-progress", "--checkpoint-every", "25"]
NAME = "mix_d2_l1_h3_t40_s333333"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_rank_gloo_run_matches_the_single_process_run(tmp_path):
    single = subprocess.run(
        [sys.executable, "-m", "jobs", "train", NAME, "--out", str(tmp_path / "single"), *ARGS],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr
    port = str(free_port())
    procs = []
    for rank in range(2):
        env = os.environ | {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "LOCAL_WORLD_SIZE": "2",
            "OMP_NUM_THREADS": "1",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "jobs", "train", NAME, "--out", str(tmp_path / "ddp"), *ARGS],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    a = torch.load(tmp_path / "single" / NAME / f"{NAME}.pth", weights_only=True)
    b = torch.load(tmp_path / "ddp" / NAME / f"{NAME}.pth", weights_only=True)
    for key in a:
        if key.endswith("attn.b_K"):
            # the key bias has an exactly-zero true gradient (softmax ignores it): AdamW turns rounding noise
            # into lr-sized steps, so it differs between any two summation orders and is checked via the logits
            continue
        assert torch.allclose(a[key].float(), b[key].float(), atol=2e-4, rtol=1e-3), key
    from arith.model import ModelShape, Transformer

    shape = ModelShape(n_layers=1, n_heads=3, n_ctx=10, d_model=32, d_head=8, d_mlp=128)
    ma, mb = Transformer(shape), Transformer(shape)
    ma.load_state_dict(a)
    mb.load_state_dict(b)
    tokens = torch.randint(0, 15, (64, 10))
    with torch.no_grad():
        assert torch.allclose(ma(tokens), mb(tokens), atol=1e-3)
    la = json.loads((tmp_path / "single" / NAME / f"{NAME}_train.json").read_text())["TrainingLoss"]
    lb = json.loads((tmp_path / "ddp" / NAME / f"{NAME}_train.json").read_text())["TrainingLoss"]
    assert len(lb) == 40 and max(abs(x - y) for x, y in zip(la, lb, strict=True)) < 1e-4
    # checkpoints were written by the DDP run too (accelerate save_state, one RNG file per rank)
    ck = sorted((tmp_path / "ddp" / NAME / "checkpoints").glob("step_*"))
    assert ck and (ck[-1] / "random_states_1.pkl").exists()
