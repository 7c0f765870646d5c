import io
import math

import pytest
import torch

from arith.errors import InputError
from arith.model import ModelShape, Patch, Transformer
from arith.vocab import Layout
from arith.weights import check_state_dict, load_model, save_weights

PUBLISHED_SHAPES = {
    # name -> (layers, heads, digits, parameter count from docs/reference_facts.md F4)
    "add_d5_l1_h3": (1, 3, 5, 3.15e6),
    "add_d6_l2_h3": (2, 3, 6, 6.28e6),
    "mix_d6_l3_h4": (3, 4, 6, 10.45e6),
}


def shape_of(layers, heads, digits, **kw):
    return ModelShape(n_layers=layers, n_heads=heads, n_ctx=Layout(digits).n_ctx, **kw)


@pytest.mark.parametrize("name", PUBLISHED_SHAPES)
def test_state_dict_has_transformer_lens_keys_and_shapes(name):
    layers, heads, digits, n_params = PUBLISHED_SHAPES[name]
    shape = shape_of(layers, heads, digits)
    sd = Transformer(shape).state_dict()
    n_ctx = Layout(digits).n_ctx
    assert sd["embed.W_E"].shape == (15, 510)
    assert sd["pos_embed.W_pos"].shape == (n_ctx, 510)
    for i in range(layers):
        assert sd[f"blocks.{i}.attn.W_Q"].shape == (heads, 510, 170)
        assert sd[f"blocks.{i}.attn.W_O"].shape == (heads, 170, 510)
        assert sd[f"blocks.{i}.attn.b_K"].shape == (heads, 170)
        assert sd[f"blocks.{i}.attn.mask"].dtype == torch.bool
        assert sd[f"blocks.{i}.attn.mask"].shape == (n_ctx, n_ctx)
        assert sd[f"blocks.{i}.attn.IGNORE"].shape == ()
        assert sd[f"blocks.{i}.mlp.W_in"].shape == (510, 2040)
        assert sd[f"blocks.{i}.mlp.W_out"].shape == (2040, 510)
    assert sd["unembed.W_U"].shape == (510, 15) and sd["unembed.b_U"].shape == (15,)
    assert set(sd) == set(shape.expected_state_shapes())
    n = sum(p.numel() for p in Transformer(shape).parameters())
    assert abs(n - n_params) / n_params < 0.005


def test_published_style_file_loads_strict(tmp_path):
    """A plain torch.save(state_dict) with an older -1e5 IGNORE buffer loads with strict=True."""
    shape = shape_of(2, 3, 6)
    sd = Transformer(shape).state_dict()
    sd = {k: (torch.tensor(-1e5) if k.endswith("IGNORE") else v) for k, v in sd.items()}
    path = tmp_path / "add_d6_l2_h3_t15K_s372001.pth"
    torch.save(sd, path)
    model = load_model(path, shape)
    assert torch.equal(model.state_dict()["blocks.0.attn.W_Q"], sd["blocks.0.attn.W_Q"])


def test_init_follows_gpt2_rule():
    shape = shape_of(2, 3, 6)
    m = Transformer(shape)
    m.reset_parameters(torch.Generator().manual_seed(0))
    std = m.blocks[0].mlp.W_in.std().item()
    assert abs(std - 0.8 / math.sqrt(510)) < 0.001
    assert (m.blocks[0].attn.b_Q == 0).all() and (m.ln_final.w == 1).all()


def reference_forward(sd, shape: ModelShape, tokens):
    """An independent, naive transcription of HookedTransformer's maths (einsums, explicit mask, LN by hand)."""

    def ln(x, w, b):
        x = x - x.mean(-1, keepdim=True)
        return x / (x.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt() * w + b

    x = sd["embed.W_E"][tokens] + sd["pos_embed.W_pos"][: tokens.shape[1]]
    P = tokens.shape[1]
    for i in range(shape.n_layers):
        p = f"blocks.{i}."
        h = ln(x, sd[p + "ln1.w"], sd[p + "ln1.b"])
        q = torch.einsum("bpd,hde->bphe", h, sd[p + "attn.W_Q"]) + sd[p + "attn.b_Q"]
        k = torch.einsum("bpd,hde->bphe", h, sd[p + "attn.W_K"]) + sd[p + "attn.b_K"]
        v = torch.einsum("bpd,hde->bphe", h, sd[p + "attn.W_V"]) + sd[p + "attn.b_V"]
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(shape.d_head)
        mask = torch.tril(torch.ones(P, P, dtype=torch.bool))
        scores = torch.where(mask, scores, torch.tensor(-1e5))
        pattern = scores.softmax(-1)
        z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
        x = x + torch.einsum("bqhe,hed->bqd", z, sd[p + "attn.W_O"]) + sd[p + "attn.b_O"]
        h = ln(x, sd[p + "ln2.w"], sd[p + "ln2.b"])
        post = torch.relu(h @ sd[p + "mlp.W_in"] + sd[p + "mlp.b_in"])
        x = x + post @ sd[p + "mlp.W_out"] + sd[p + "mlp.b_out"]
    x = ln(x, sd["ln_final.w"], sd["ln_final.b"])
    return x @ sd["unembed.W_U"] + sd["unembed.b_U"]


@pytest.mark.parametrize("layers, heads", [(1, 3), (3, 4)])
def test_logits_match_a_naive_transcription_of_the_maths(layers, heads):
    shape = shape_of(layers, heads, 6, d_model=48, d_head=20, d_mlp=96)  # heads*d_head != d_model
    m = Transformer(shape)
    with torch.no_grad():
        for p in m.parameters():  # non-trivial biases and LN params too
            p.add_(0.05 * torch.randn_like(p))
    tokens = torch.randint(0, 15, (8, 22))
    with torch.no_grad():
        ours = m(tokens)
        ref = reference_forward(m.state_dict(), shape, tokens)
    assert torch.allclose(ours, ref, atol=1e-4, rtol=1e-4)


def test_transformer_lens_gives_the_same_logits(tmp_path):
    tl = pytest.importorskip(
        "transformer_lens",
        exc_type=ImportError,
        reason="TransformerLens is an optional oracle (pip install 'transformer_lens<3')",
    )
    shape = shape_of(2, 4, 6, d_model=48, d_head=20, d_mlp=192)
    ours = Transformer(shape)
    cfg = tl.HookedTransformerConfig(
        n_layers=2,
        n_heads=4,
        d_model=48,
        d_head=20,
        d_mlp=192,
        act_fn="relu",
        d_vocab=15,
        d_vocab_out=15,
        n_ctx=22,
        normalization_type="LN",
        seed=1,
    )
    theirs = tl.HookedTransformer(cfg)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    tokens = torch.randint(0, 15, (4, 22))
    with torch.no_grad():
        assert torch.allclose(ours(tokens), theirs(tokens), atol=1e-5)
    # and theirs load into ours with strict=True
    ours2 = Transformer(shape)
    ours2.load_state_dict(theirs.state_dict(), strict=True)


def test_cache_and_patch_hooks():
    shape = shape_of(2, 3, 2, d_model=32, d_head=8, d_mlp=64)
    m = Transformer(shape).eval()
    tokens = torch.randint(0, 15, (5, shape.n_ctx))
    names = ["blocks.1.attn.hook_z", "blocks.0.attn.hook_pattern", "blocks.0.mlp.hook_post", "blocks.1.hook_resid_post"]
    with torch.no_grad():
        plain = m(tokens)
        logits, cache = m.run_with_cache(tokens, names)
    assert torch.allclose(plain, logits, atol=1e-5)  # the explicit-pattern path equals the fused fast path
    assert cache["blocks.1.attn.hook_z"].shape == (5, shape.n_ctx, 3, 8)
    assert cache["blocks.0.attn.hook_pattern"].shape == (5, 3, shape.n_ctx, shape.n_ctx)
    assert torch.allclose(cache["blocks.0.attn.hook_pattern"].sum(-1), torch.ones(5, 3, shape.n_ctx))
    assert cache["blocks.0.mlp.hook_post"].shape == (5, shape.n_ctx, 64)

    # patching a head at position 4 with its own cached value changes nothing ...
    z = cache["blocks.1.attn.hook_z"]
    same = Patch(pos=4, head=1, value=z[:, 4, 1])
    with torch.no_grad():
        assert torch.allclose(m(tokens, hooks={"blocks.1.attn.hook_z": same}), plain, atol=1e-5)
        # ... and a different value changes only positions >= 4, and only in the patched rows
        rows = torch.tensor([0, 2])
        other = Patch(pos=4, head=1, value=torch.full((8,), 3.0), rows=rows)
        out = m(tokens, hooks={"blocks.1.attn.hook_z": other})
    assert torch.allclose(out[:, :4], plain[:, :4], atol=1e-5)
    assert not torch.allclose(out[0, 4], plain[0, 4])
    assert torch.allclose(out[1], plain[1], atol=1e-5) and torch.allclose(out[3], plain[3], atol=1e-5)


def test_wrong_shape_and_corrupt_files_are_named(tmp_path):
    shape = shape_of(2, 3, 6, d_model=32, d_head=8, d_mlp=64)
    path = tmp_path / "w.pth"
    save_weights(Transformer(shape), path)
    other = shape_of(2, 4, 6, d_model=32, d_head=8, d_mlp=64)
    with pytest.raises(InputError, match=r"blocks.0.attn.W_Q has shape \[3, 32, 8\], expected \[4, 32, 8\]"):
        load_model(path, other)
    with pytest.raises(InputError, match="missing key blocks.2"):
        load_model(path, shape_of(3, 3, 6, d_model=32, d_head=8, d_mlp=64))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="not a readable torch state dict"):
        load_model(bad, shape)
    buf = io.BytesIO()
    torch.save({"x": 1}, buf)
    (tmp_path / "notsd.pth").write_bytes(buf.getvalue())
    with pytest.raises(InputError, match="expected a state dict of tensors"):
        load_model(tmp_path / "notsd.pth", shape)
    with pytest.raises(InputError, match="no such file"):
        load_model(tmp_path / "missing.pth", shape)
    sd = Transformer(shape).state_dict()
    sd["extra.param"] = torch.zeros(1)
    with pytest.raises(InputError, match="unexpected key extra.param"):
        check_state_dict(sd, shape, "x")


def test_several_patches_of_one_point_combine_into_one_hook():
    from arith.model import patches

    shape = shape_of(1, 3, 2, d_model=32, d_head=8, d_mlp=64)
    m = Transformer(shape).eval()
    tokens = torch.randint(0, 15, (6, shape.n_ctx))
    a = Patch(pos=3, head=0, value=torch.zeros(8), rows=torch.tensor([0, 1, 2]))
    b = Patch(pos=5, head=2, value=torch.ones(8), rows=torch.tensor([3, 4, 5]))
    with torch.no_grad():
        both = m(tokens, hooks={"blocks.0.attn.hook_z": patches(a, b)})
        only_a = m(tokens, hooks={"blocks.0.attn.hook_z": a})
        only_b = m(tokens, hooks={"blocks.0.attn.hook_z": b})
    assert torch.allclose(both[:3], only_a[:3], atol=1e-6) and torch.allclose(both[3:], only_b[3:], atol=1e-6)


@pytest.mark.parametrize(
    "point, fragment",
    [
        ("blocks.0.attn.hook_zz", "no such point"),
        ("blocks.2.attn.hook_z", "layer 2 is out of range (the model has 2 layers)"),
        ("blocks.-1.hook_resid_pre", "no such point"),
        ("hook_resid_pre", "no such point"),
    ],
)
def test_a_hook_point_that_does_not_exist_is_an_error_listing_the_valid_ones(point, fragment):
    m = Transformer(shape_of(2, 3, 2, d_model=32, d_head=8, d_mlp=64)).eval()
    tokens = torch.randint(0, 15, (2, m.shape.n_ctx))
    ablate = Patch(pos=3, head=0, value=torch.zeros(8))
    with pytest.raises(InputError) as err, torch.no_grad():
        m(tokens, hooks={point: ablate})  # would otherwise report "no effect"
    message = str(err.value)
    assert fragment in message and "L in 0..1" in message
    assert all(p in message for p in ("hook_resid_pre", "attn.hook_pattern", "attn.hook_z", "mlp.hook_post"))
    with pytest.raises(InputError, match="no such point"), torch.no_grad():
        m.run_with_cache(tokens, ["blocks.0.mlp.hook_pre"])
    assert len(m.hook_points()) == 10 and "blocks.1.hook_resid_post" in m.hook_points()


def test_a_patch_of_an_unknown_kind_is_refused_when_made():
    with pytest.raises(InputError, match="unknown patch kind 'resid'"):
        Patch(pos=0, value=torch.zeros(1), kind="resid")


def test_widths_are_read_from_a_state_dict():
    from arith.names import parse_name
    from arith.weights import shape_from_state_dict

    shape = shape_of(2, 3, 6, d_model=32, d_head=8, d_mlp=96)
    sd = Transformer(shape).state_dict()
    assert shape_from_state_dict(sd, parse_name("add_d6_l2_h3_t20_s111111")) == shape
    # tensors absent: the published widths
    published = shape_from_state_dict({}, parse_name("add_d6_l2_h3_t20_s111111"))
    assert (published.d_model, published.d_head, published.d_mlp) == (510, 170, 2040)
