import json

import numpy as np
import pytest
import torch

from arith.errors import InputError
from arith.insert import InsertSpec, first_copy, periodic_copy
from arith.model import ModelShape, Transformer
from arith.questions import exhaustive_block
from arith.scoring import score
from arith.train import TrainConfig, newest_checkpoint
from arith.vocab import ADD, encode
from arith.weights import load_model, model_info
from tests.conftest import train_in

TINY = dict(d_model=32, d_head=8, lr=1e-3, log_every=20, checkpoint_every=50)


def test_tiny_model_reaches_100_percent_on_every_question(demo_model):
    shape, n, _ = model_info(demo_model)
    model = load_model(demo_model, shape)
    x, y, op = exhaustive_block(n, ADD, 0, 10_000)
    s = score(model, encode(x, y, op), n, mode="exact")
    assert s.failed.sum() == 0
    data = json.loads(demo_model.with_name(demo_model.name.replace(".pth", "_train.json")).read_text())
    assert len(data["TrainingLoss"]) == 3000
    assert data["Config"]["avg_final_loss"] < 1e-4


def test_train_json_has_the_current_format(demo_model):
    data = json.loads(demo_model.with_name(demo_model.name.replace(".pth", "_train.json")).read_text())
    cfg = data["Config"]
    for key in (
        "model_name n_layers n_heads d_vocab d_model d_mlp_multiplier d_head act_fn grokfast grokfast_alpha "
        "grokfast_lamb batch_size n_training_steps weight_decay lr insert_mode insert_late insert_n_layers "
        "insert_n_heads insert_training_seed insert_n_training_steps training_seed avg_final_loss final_loss "
        "analysis_seed perc_mult perc_sub perc_add n_digits mlp_slices op_position_name"
    ).split():
        assert key in cfg, key
    assert cfg["model_name"] == "add_d2_l1_h3_t3K_s123456" and cfg["training_seed"] == 123456
    assert cfg["perc_add"] == 100 and cfg["op_position_name"] == "P2"
    assert cfg["final_loss"] == data["TrainingLoss"][-1]
    assert cfg["avg_final_loss"] == round(float(np.mean(data["TrainingLoss"][-5:])), 9)


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    cfg = TrainConfig("mix_d2_l1_h3_t200_s111111", **TINY)
    whole = train_in(cfg, tmp_path / "whole", resume=False, progress=False)
    part = train_in(cfg, tmp_path / "part", resume=False, progress=False, stop_after=120)
    assert not part.complete and part.steps_done == 120
    assert newest_checkpoint(tmp_path / "part" / "checkpoints").name == "step_00000120"
    assert not part.weights.exists()
    rest = train_in(cfg, tmp_path / "part", resume=True, progress=False)
    assert rest.complete and rest.steps_done == 200
    a = torch.load(whole.weights, weights_only=True)
    b = torch.load(rest.weights, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    la = json.loads(whole.train_json.read_text())["TrainingLoss"]
    lb = json.loads(rest.train_json.read_text())["TrainingLoss"]
    assert la == lb
    # only the newest checkpoints are kept
    assert len(list((tmp_path / "part" / "checkpoints").glob("step_*"))) <= 2


def test_different_seeds_give_different_models(tmp_path):
    a = train_in(TrainConfig("add_d2_l1_h3_t20_s111111", **TINY), tmp_path / "a", progress=False)
    b = train_in(TrainConfig("add_d2_l1_h3_t20_s222222", **TINY), tmp_path / "b", progress=False)
    wa = torch.load(a.weights, weights_only=True)["embed.W_E"]
    wb = torch.load(b.weights, weights_only=True)["embed.W_E"]
    assert not torch.equal(wa, wb)


def test_bad_training_settings_are_refused():
    with pytest.raises(InputError, match="needs the addition model"):
        TrainConfig("ins1_mix_d6_l3_h4_t40K_s372001")
    with pytest.raises(InputError, match="enrichment"):
        TrainConfig("add_d2_l1_h3_t20_s111111", enrich="lots")
    with pytest.raises(InputError, match="must be positive"):
        TrainConfig("add_d2_l1_h3_t20_s111111", lr=0)
    with pytest.raises(InputError, match="seed"):
        TrainConfig("add_d2_l1_h3_t20_s11")


def _shape(layers, heads):
    return ModelShape(n_layers=layers, n_heads=heads, n_ctx=22, d_model=16, d_head=4, d_mlp=32)


def test_ins1_first_copy_copies_exactly_what_the_reference_copies():
    main = Transformer(_shape(3, 4))
    ins = Transformer(_shape(2, 3))
    with torch.no_grad():
        for p in ins.parameters():
            p.normal_()
    before = {k: v.clone() for k, v in main.state_dict().items()}
    first_copy(dict(main.named_parameters()), ins.state_dict(), InsertSpec(1, 2, 3))
    after = main.state_dict()
    src = ins.state_dict()
    assert torch.equal(after["blocks.1.attn.W_Q"][:3], src["blocks.1.attn.W_Q"])
    assert torch.equal(after["blocks.1.attn.W_Q"][3], before["blocks.1.attn.W_Q"][3])  # extra head untouched
    assert torch.equal(after["blocks.0.mlp.W_in"], src["blocks.0.mlp.W_in"])
    assert torch.equal(after["embed.W_E"], src["embed.W_E"]) and torch.equal(after["unembed.W_U"], src["unembed.W_U"])
    assert torch.equal(after["ln_final.w"], src["ln_final.w"])
    # not copied by the reference: W_O, b_O, ln2, ln_final.b, b_U, and layer 2
    for key in ("blocks.0.attn.W_O", "blocks.0.ln2.w", "ln_final.b", "unembed.b_U", "blocks.2.attn.W_Q"):
        assert torch.equal(after[key], before[key]), key
    # with the fixes, W_O and the rest come along
    fixed = Transformer(_shape(3, 4))
    first_copy(dict(fixed.named_parameters()), src, InsertSpec(1, 2, 3, fixes=True))
    assert torch.equal(fixed.state_dict()["blocks.0.attn.W_O"][:3], src["blocks.0.attn.W_O"])
    assert torch.equal(fixed.state_dict()["unembed.b_U"], src["unembed.b_U"])


def test_ins2_recopies_useful_heads_into_the_rightmost_slots():
    main = Transformer(_shape(3, 4))
    ins = Transformer(_shape(2, 3))
    spec = InsertSpec(2, 2, 3, useful_heads=((0, 1),))
    periodic_copy(dict(main.named_parameters()), ins.state_dict(), spec, n_heads_main=4)
    assert torch.equal(main.blocks[0].attn.W_K[2], ins.blocks[0].attn.W_K[1])  # 4 - 3 + 1 = slot 2
    fixed = Transformer(_shape(3, 4))
    periodic_copy(dict(fixed.named_parameters()), ins.state_dict(), InsertSpec(2, 2, 3, True, ((0, 1),)), 4)
    assert torch.equal(fixed.blocks[0].attn.W_K[1], ins.blocks[0].attn.W_K[1])
    assert spec.recopy_due(0) and spec.recopy_due(300) and not spec.recopy_due(301)
    assert InsertSpec(4, 2, 3).recopy_due(301) and not InsertSpec(1, 2, 3).recopy_due(0)


def test_ins1_training_starts_from_the_addition_model(tmp_path):
    add = train_in(TrainConfig("add_d2_l1_h3_t20_s111111", **TINY), tmp_path / "add", progress=False)
    cfg = TrainConfig("ins1_mix_d2_l2_h3_t20_s111111", insert_weights=str(add.weights), **TINY)
    res = train_in(cfg, tmp_path / "ins", progress=False)
    assert res.complete
    conf = json.loads(res.train_json.read_text())["Config"]
    assert conf["insert_mode"] == 1 and conf["perc_sub"] == 80 and conf["insert_n_layers"] == 1


def test_bf16_paths_run_on_cpu(tmp_path, demo_model):
    """The GPU configuration (bf16 autocast) exercised on CPU: training runs, scoring agrees with fp32."""
    res = train_in(TrainConfig("add_d2_l1_h3_t20_s111111", precision="bf16", **TINY), tmp_path / "bf16", progress=False)
    assert res.complete and np.isfinite(res.final_loss)
    shape, n, _ = model_info(demo_model)
    model = load_model(demo_model, shape)
    tokens = encode(*exhaustive_block(n, ADD, 0, 2000))
    fp32 = score(model, tokens, n)
    bf16 = score(model, tokens, n, precision="bf16")
    assert (fp32.pred == bf16.pred).mean() > 0.99
