"""Loading and saving weights (`<name>.pth`, a plain TransformerLens state dict) and `<name>_train.json`."""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch

from arith.errors import InputError
from arith.files import atomic_write_bytes
from arith.model import ModelShape, Transformer
from arith.names import beside_weights, name_of_weights
from arith.vocab import Layout

PUBLISHED_D_MODEL = 510
PUBLISHED_D_HEAD = 170
PUBLISHED_MLP_MULT = 4
IGNORE_SUFFIX = "attn.IGNORE"  # the attention mask's fill value, -inf in every TransformerLens state dict


def save_weights(model: Transformer, path: str | Path) -> None:
    """`torch.save(state_dict)` with CPU tensors, written atomically."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    atomic_write_bytes(path, buf.getvalue())


def require_weights_file(path: str | Path) -> Path:
    """`path` when it is a file; else InputError saying it is missing or a folder."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"weights {path}: is a folder, not a .pth file")
    if not path.is_file():
        raise InputError(f"weights {path}: no such file")
    return path


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = require_weights_file(path)
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, truncated file, pickle with disallowed globals, ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"weights {path}: not a readable torch state dict ({reason[:160]})") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise InputError(f"weights {path}: expected a state dict of tensors, got {type(sd).__name__}")
    check_finite(sd, str(path))
    return sd


def check_finite(sd: dict[str, torch.Tensor], source: str) -> None:
    """InputError naming the first tensor holding NaN or +-inf values, how many and which kinds: weights like
    that answer nothing (their logits are NaN), so no command uses them. The attention masks' `IGNORE` buffers
    are -inf by design (TransformerLens's state dict) and are exempt when they hold exactly that."""
    for key, t in sd.items():
        if not t.is_floating_point() and not t.is_complex():
            continue
        if key.endswith(IGNORE_SUFFIX) and t.numel() == 1 and float(t) == float("-inf"):
            continue
        bad = ~torch.isfinite(t)
        count = int(bad.sum())
        if count:
            bad_values = t[bad]
            kinds = [
                word
                for word, present in (
                    ("nan", bool(torch.isnan(bad_values).any())),
                    ("inf", bool((bad_values == float("inf")).any())),
                    ("-inf", bool((bad_values == float("-inf")).any())),
                )
                if present
            ]
            raise InputError(
                f"weights {source}: {key} holds {count:,} non-finite value{'s' if count != 1 else ''} "
                f"({', '.join(kinds)}); refusing to use it"
            )


def check_state_dict(sd: dict[str, torch.Tensor], shape: ModelShape, source: str, hint: str = "") -> None:
    """One clear error naming the first mismatch between a state dict and the expected shape (`hint` appended)."""
    expected = shape.expected_state_shapes()
    tail = f"; {hint}" if hint else ""
    for key, want in expected.items():
        got = tuple(sd[key].shape) if key in sd else want
        if got != want:
            raise InputError(
                f"weights {source}: {key} has shape {list(got)}, expected {list(want)} for {describe(shape)}{tail}"
            )
    missing = [k for k in expected if k not in sd]
    extra = [k for k in sd if k not in expected]
    if missing:
        raise InputError(
            f"weights {source}: missing key {missing[0]} ({len(missing)} missing) for {describe(shape)}{tail}"
        )
    if extra:
        raise InputError(
            f"weights {source}: unexpected key {extra[0]} ({len(extra)} extra) for {describe(shape)}{tail}"
        )


def describe(shape: ModelShape) -> str:
    return (
        f"l{shape.n_layers} h{shape.n_heads} d_model {shape.d_model} d_head {shape.d_head} "
        f"d_mlp {shape.d_mlp} n_ctx {shape.n_ctx}"
    )


def load_model(path: str | Path, shape: ModelShape, device: torch.device | str = "cpu") -> Transformer:
    sd = read_state_dict(path)
    check_state_dict(sd, shape, str(path))
    model = Transformer(shape)
    model.load_state_dict(sd, strict=True)
    return model.to(device).eval()


def shape_from_config(config: dict, source: str = "train json") -> ModelShape:
    """ModelShape from a train.json `Config` (current or historic format); `source` names the file in errors."""
    try:
        d_model = int(config.get("d_model", PUBLISHED_D_MODEL))
        d_mlp = int(config["d_mlp"]) if "d_mlp" in config else int(config.get("d_mlp_multiplier", 4)) * d_model
        return ModelShape(
            n_layers=int(config["n_layers"]),
            n_heads=int(config["n_heads"]),
            n_ctx=int(config.get("n_ctx", Layout(int(config["n_digits"])).n_ctx)),
            d_model=d_model,
            d_head=int(config.get("d_head", PUBLISHED_D_HEAD)),
            d_mlp=d_mlp,
            act_fn=str(config.get("act_fn", "relu")),
        )
    except KeyError as exc:
        raise InputError(f"{source}: Config lacks {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise InputError(f"{source}: Config has a bad value ({exc})") from None


def read_train_json(path: str | Path, name: str | None = None, complete: bool = False) -> dict:
    """A train json of any era (`<name>_train.json`, or the per-model layout's `training_loss.json`), checked:
    an object with a `Config` object; `TrainingLoss`, when present, a list of numbers; the top-level
    `AvgFinalLoss` / `FinalLoss` of files written before mid-2024, when present, numbers. One InputError line
    otherwise.

    By default the data comes back as the file holds it (so it can be written back byte for byte). With
    `complete`, a copy whose Config has what newer eras record and older ones lack: `d_model` (510, the
    published width, when absent), `model_name` (`name`, else the file's `<name>_train.json`, when absent), and
    `avg_final_loss` / `final_loss` from the top-level `AvgFinalLoss` / `FinalLoss` when those are above 0 (the
    reference's load_training_json rule)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"train json {path}: unreadable ({reason[:160]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("Config"), dict):
        raise InputError(f"train json {path}: expected an object with a 'Config' object")

    def number(x) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    losses = data.get("TrainingLoss")
    if losses is not None and not (isinstance(losses, list) and all(number(x) for x in losses)):
        raise InputError(f"train json {path}: 'TrainingLoss' is not a list of numbers")
    for key in ("AvgFinalLoss", "FinalLoss"):
        if key in data and data[key] is not None and not number(data[key]):
            raise InputError(f"train json {path}: {key!r} is not a number")
    if not complete:
        return data
    config = dict(data["Config"])
    config.setdefault("d_model", PUBLISHED_D_MODEL)
    if "model_name" not in config:
        suffix = "_train.json"
        own = path.name[: -len(suffix)] if path.name.endswith(suffix) and len(path.name) > len(suffix) else None
        if name or own:
            config["model_name"] = name or own
    for top, key in (("AvgFinalLoss", "avg_final_loss"), ("FinalLoss", "final_loss")):
        if number(data.get(top)) and data[top] > 0:
            config[key] = data[top]
    return data | {"Config": config}


def shape_from_state_dict(sd: dict[str, torch.Tensor], name) -> ModelShape:
    """The shape of a TransformerLens state dict: layers, heads and n_ctx from the model name, the widths
    (d_model, d_head, d_mlp) from the tensors (embed.W_E [d_vocab, d_model], blocks.0.attn.W_Q
    [n_heads, d_model, d_head], blocks.0.mlp.W_in [d_model, d_mlp]); the published widths where a tensor is absent.
    """

    def dim(key: str, ndim: int, axis: int, default: int) -> int:
        t = sd.get(key)
        return int(t.shape[axis]) if t is not None and t.ndim == ndim and t.shape[axis] > 0 else default

    d_model = dim("embed.W_E", 2, 1, PUBLISHED_D_MODEL)
    return ModelShape.for_name(
        name,
        d_model,
        dim("blocks.0.attn.W_Q", 3, 2, PUBLISHED_D_HEAD),
        dim("blocks.0.mlp.W_in", 2, 1, PUBLISHED_MLP_MULT * d_model),
    )


def model_info(weights: str | Path) -> tuple[ModelShape, int, dict]:
    """(shape, n_digits, config) for a weights file, whose tensors are read and checked (readable, of the shape,
    finite: `read_state_dict`, `check_state_dict`).

    From `<name>_train.json` beside it when there is one. Without it, layers, heads and digits come from the name
    and the widths from the weights' own tensors, so published-format weights work alone; weights that do not
    fit their name raise InputError naming the missing train json.
    """
    weights = require_weights_file(weights)
    name = name_of_weights(weights)
    train_json = beside_weights(weights, "train")
    if train_json.is_file():
        config = read_train_json(train_json)["Config"]
        if "n_digits" not in config:
            raise InputError(f"train json {train_json}: Config lacks 'n_digits'")
        shape = shape_from_config(config, f"train json {train_json}")
        # every command reads this first (verify, predict, ablate, algo, regenerate): weights that are unreadable,
        # of another shape or not finite are one line here, before any cluster or work starts
        check_state_dict(read_state_dict(weights), shape, str(weights))
        return shape, int(config["n_digits"]), config
    from arith.names import parse_name

    mn = parse_name(name)
    sd = read_state_dict(weights)
    shape = shape_from_state_dict(sd, mn)
    check_state_dict(
        sd,
        shape,
        str(weights),
        hint=f"its {train_json.name} is missing, so the layers and heads come from the name; "
        "put the train json beside the weights",
    )
    return shape, mn.n_digits, {"model_name": name, "n_digits": mn.n_digits}


def trained_ops(config: dict, name: str) -> tuple[int, ...]:
    """The operations (ADD, SUB, MUL codes) a model was trained on.

    From the train json Config's perc_add/perc_sub/perc_mult when it has perc_add, else from the model name's
    mix. Addition and subtraction as mixed; multiplication only when nothing else was trained; ADD at least.
    """
    from arith.vocab import ADD, MUL, SUB

    if "perc_add" in config:
        percs = config
    else:
        from arith.names import parse_name

        mn = parse_name(name)
        percs = {"perc_add": mn.perc_add, "perc_sub": mn.perc_sub, "perc_mult": mn.perc_mult}
    ops = []
    if percs.get("perc_add", 100) > 0:
        ops.append(ADD)
    if percs.get("perc_sub", 0) > 0:
        ops.append(SUB)
    if percs.get("perc_mult", 0) > 0 and not ops:
        ops.append(MUL)
    return tuple(ops) or (ADD,)
