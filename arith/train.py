"""Training (docs/reference_facts.md F5): a fresh batch per step, AdamW, 20% linear warm-up from 1% then cosine to 0,
loss on the n+2 answer tokens only. Runs through accelerate: one process on CPU/GPU, or DDP when started with
torch.distributed environment variables (gloo on CPU, nccl on GPU).

Determinism: the model init derives from (seed, "init") and the global batch of step k from (seed, "train", k),
so a resumed run, or a DDP run of any world size (each rank takes its slice of the same global batch), sees
exactly the data of an uninterrupted single-process run. Checkpoints are accelerate `save_state` folders
`checkpoints/step_XXXXXXXX` written under a temporary name and renamed, so the newest one is always complete.

Verdicts that never lie: every step checks that the loss (averaged over the DDP ranks) and the gradient are
finite before the optimizer moves; the first one that is not raises `Diverged` naming the step, and nothing is
written from that state (no checkpoint, no weights, no train json): the newest checkpoint on disk is the last
good one. With `Interrupts` (the CLI), SIGINT and SIGTERM finish the current step, save a checkpoint there and
return with `stopped_by` set; the DDP ranks agree on the step through the same all-reduce as the loss.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from arith.device import PRECISIONS
from arith.errors import InputError
from arith.files import atomic_write_json
from arith.insert import InsertSpec, first_copy, periodic_copy, useful_heads_from_behavior
from arith.model import ModelShape, Transformer
from arith.names import ModelName, check_pair, parse_name
from arith.questions import ENRICH_RULES, OpMix, rng_for, training_batch
from arith.scoring import answer_nll
from arith.vocab import Layout, encode
from arith.weights import check_state_dict, read_state_dict, save_weights

GROKFAST_ALPHA = 0.98
GROKFAST_LAMB = 2.0
ANALYSIS_SEED = 673023
KEEP_CHECKPOINTS = 2
CHECKPOINT_CONFIG = "train_config.json"  # the `Config` record of the settings a checkpoint was saved under

# The keys of the `Config` record (`<name>_train.json`, and each checkpoint's train_config.json) that decide the
# weights: a run folder's recorded settings and a requested TrainConfig are "the same settings" when these agree
# (the name fixes op, digits, layers and heads; checkpoint_every and log_every do not change the weights).
SETTING_KEYS = (
    "d_model",
    "d_head",
    "d_mlp_multiplier",
    "batch_size",
    "lr",
    "weight_decay",
    "enrich",
    "fixes",
    "precision",
    "n_training_steps",
    "training_seed",
    "insert_mode",
    "insert_n_layers",
    "insert_n_heads",
    "insert_training_seed",
    "insert_n_training_steps",
)


class CheckpointError(InputError):
    """A checkpoint that cannot be resumed under the requested settings (other settings, damaged, missing
    files). The message names the checkpoint folder; callers add how to start over."""


class Diverged(RuntimeError):
    """The loss or the gradient stopped being finite. The message names the run, the quantity, the (1-based)
    step and the last good checkpoint kept; `step` and `kept` (the checkpoint's step, None: none) say the same."""

    def __init__(self, message: str, step: int, kept: int | None):
        super().__init__(message)
        self.step = step
        self.kept = kept


class Interrupts:
    """SIGINT (Ctrl-C) and SIGTERM caught while training, as a context manager: the first one is only noted
    (`caught`, the signal's name) and the training loop finishes its step, saves a checkpoint there and
    returns; a second one acts at once, as if nothing had been caught. Only handlers still at their defaults
    are taken over (submitit's own SIGTERM and SIGUSR2 handling inside a SLURM job is left alone), and only in
    the main thread."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.caught: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in self.SIGNALS:
            current = signal.getsignal(sig)
            if current in (signal.SIG_DFL, signal.default_int_handler):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.caught is None:
            self.caught = signal.Signals(signum).name
            return
        self.restore()
        signal.raise_signal(signum)  # the second one: what it would have done (KeyboardInterrupt, or exit)

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def __exit__(self, *exc) -> None:
        self.restore()


def _setting(default, help: str, choices: tuple[str, ...] | None = None):
    """A TrainConfig field a user may set: its help text and choices travel with it (the CLIs read them)."""
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True)
class TrainConfig:
    """One training run. The fields with help metadata are the settings `varith train` and `varith sweep`
    take as flags (`tunable_fields`); the name carries op, digits, layers, heads, steps and seed."""

    name: str
    d_model: int = _setting(510, "residual width")
    d_head: int = _setting(170, "width of each attention head")
    d_mlp_multiplier: int = _setting(4, "MLP width as a multiple of d_model")
    batch_size: int = _setting(64, "global batch per step, split across the DDP ranks")
    lr: float = _setting(8e-5, "peak learning rate")
    weight_decay: float = _setting(0.1, "AdamW weight decay")
    beta1: float = 0.9
    beta2: float = 0.98
    enrich: str = _setting(
        "current", "training-batch enrichment: current (40%% of batches), historic (60%%) or none", ENRICH_RULES
    )
    insert_weights: str | None = None
    fixes: bool = _setting(False, "the corrected ins*/GrokFast behaviour instead of the reference's (README, Fidelity)")
    precision: str = _setting("fp32", "fp32, or bf16 autocast (GPUs, and CPUs with bf16 instructions)", PRECISIONS)
    checkpoint_every: int = _setting(1000, "steps between accelerate checkpoints")
    log_every: int = _setting(100, "steps between loss updates of the progress report")

    def __post_init__(self):
        mn = self.model_name  # validates the name
        if self.enrich not in ENRICH_RULES:
            raise InputError(f"unknown enrichment rule {self.enrich!r} (expected one of {', '.join(ENRICH_RULES)})")
        for f in fields(self):  # every number setting is finite: nan and inf would only train to nan
            value = getattr(self, f.name)
            if f.type in (float, "float") and not math.isfinite(value):
                raise InputError(f"{f.name} ({_flag(f.name)}) must be a finite number, got {value!r}")
        positive = ("d_model", "d_head", "d_mlp_multiplier", "batch_size", "lr", "checkpoint_every", "log_every")
        for key in positive:
            if not getattr(self, key) > 0:
                raise InputError(f"{key} ({_flag(key)}) must be positive, got {getattr(self, key)!r}")
        if self.weight_decay < 0:
            raise InputError(f"weight_decay (--weight-decay) must be 0 or more, got {self.weight_decay!r}")
        if self.precision not in PRECISIONS:
            raise InputError(f"unknown precision {self.precision!r} (expected {' or '.join(PRECISIONS)})")
        if mn.insert_mode and not self.insert_weights:
            raise InputError(f"{self.name}: an ins{mn.insert_mode} model needs the addition model's weights (--insert)")

    @property
    def model_name(self) -> ModelName:
        return parse_name(self.name)

    @property
    def shape(self) -> ModelShape:
        return ModelShape.for_name(self.model_name, self.d_model, self.d_head, self.d_mlp_multiplier * self.d_model)

    @property
    def op_mix(self) -> OpMix:
        mn = self.model_name
        return OpMix(add=mn.perc_add, sub=mn.perc_sub, mul=mn.perc_mult)


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


@dataclass
class TrainResult:
    name: str
    weights: Path
    train_json: Path
    steps_done: int
    complete: bool
    final_loss: float | None
    stopped_by: str | None = None  # the signal (SIGINT, SIGTERM) that stopped it early, with a checkpoint


class _Progress:
    """Step counter and loss curve, saved inside accelerate checkpoints (register_for_checkpointing)."""

    def __init__(self, steps: int):
        self.step = 0
        self.losses = np.zeros(steps, dtype=np.float64)

    def state_dict(self):
        return {"step": self.step, "losses": torch.from_numpy(self.losses[: self.step].copy())}

    def load_state_dict(self, sd):
        self.step = int(sd["step"])
        self.losses[: self.step] = sd["losses"].numpy()


class _GrokFast:
    """GrokFast's EMA gradient filter (alpha 0.98, lambda 2.0; docs/reference_facts.md F5.2, spec 14.3).

    The filter (grokfast's `gradfilter_ema`): ema = alpha * ema + (1 - alpha) * g, then g += lambda * ema, the
    ema starting from the first step's gradient. Reference (default): the caller never keeps the returned ema, so
    every step starts afresh (ema = g) and the gradient is only scaled by 1 + lambda = 3. With `fixes`: the real
    filter, its state kept across steps and in checkpoints (first step: ema = g, so g becomes 3g as in the
    reference; later steps add lambda times the slow average)."""

    def __init__(self, params, fixes: bool):
        self.params = [p for p in params if p.requires_grad]
        self.fixes = fixes
        self.ema = [torch.zeros_like(p) for p in self.params] if fixes else []
        self.started = False

    @torch.no_grad()
    def apply(self):
        if not self.fixes:
            for p in self.params:
                p.grad.mul_(1.0 + GROKFAST_LAMB)
            return
        for p, e in zip(self.params, self.ema, strict=True):
            if self.started:
                e.mul_(GROKFAST_ALPHA).add_(p.grad, alpha=1 - GROKFAST_ALPHA)
            else:
                e.copy_(p.grad)  # grokfast's gradfilter_ema(grads=None) starts from the current gradient
            p.grad.add_(e, alpha=GROKFAST_LAMB)
        self.started = True

    def state_dict(self):
        return {"ema": [e.cpu() for e in self.ema], "started": self.started}

    def load_state_dict(self, sd):
        for e, s in zip(self.ema, sd["ema"], strict=True):
            e.copy_(s)
        # checkpoints written before the flag existed started from zeros and are past their first step
        self.started = bool(sd.get("started", True))


def init_seed(seed: int) -> int:
    return int(rng_for(seed, "init").integers(0, 2**62))


def _scheduler(optimizer, steps: int):
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    warmup = steps // 5
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, math.ceil(steps - warmup)))
    if warmup == 0:
        return cosine
    linear = LinearLR(optimizer, start_factor=0.01, end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, [linear, cosine], milestones=[warmup])


def _make_accelerator(precision: str):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if not distributed:  # a fresh single-process state per run (tests, debug executor, notebooks)
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="bf16" if precision == "bf16" else "no")


def tunable_fields() -> tuple:
    """The TrainConfig fields a user may set (dataclasses.Field objects with help and choices metadata)."""
    return tuple(f for f in fields(TrainConfig) if "help" in f.metadata)


@dataclass(frozen=True)
class TrainPaths:
    """Where a training run writes: its weights, its train json and its checkpoint folder (the caller names
    them: jobs.runs.rundir.RunDir.train_paths)."""

    weights: Path
    train_json: Path
    checkpoints: Path


def newest_checkpoint(checkpoints: str | Path) -> Path | None:
    """The newest complete accelerate state in a checkpoint folder (`step_XXXXXXXX`), or None."""
    ckpts = sorted(Path(checkpoints).glob("step_*"))
    return ckpts[-1] if ckpts else None


def config_record(cfg: TrainConfig, losses: np.ndarray | None = None) -> dict:
    """The `Config` object of `<name>_train.json` (current format, docs/reference_facts.md F5.3)."""
    mn = cfg.model_name
    ins = parse_name(Path(cfg.insert_weights).stem) if cfg.insert_weights and mn.insert_mode else None
    rec = {
        "model_name": cfg.name,
        "n_layers": mn.n_layers,
        "n_heads": mn.n_heads,
        "d_vocab": 15,
        "d_model": cfg.d_model,
        "d_mlp_multiplier": cfg.d_mlp_multiplier,
        "d_head": cfg.d_head,
        "act_fn": "relu",
        "grokfast": mn.grokfast,
        "grokfast_alpha": GROKFAST_ALPHA,
        "grokfast_lamb": GROKFAST_LAMB,
        "batch_size": cfg.batch_size,
        "n_training_steps": mn.steps,
        "weight_decay": cfg.weight_decay,
        "lr": cfg.lr,
        "insert_mode": mn.insert_mode,
        "insert_late": False,
        "insert_n_layers": ins.n_layers if ins else 2,
        "insert_n_heads": ins.n_heads if ins else 3,
        "insert_training_seed": ins.seed if ins else 372001,
        "insert_n_training_steps": ins.steps if ins else 15000,
        "training_seed": mn.seed,
        "avg_final_loss": 0.0,
        "final_loss": 0.0,
        "analysis_seed": ANALYSIS_SEED,
        "perc_mult": mn.perc_mult,
        "perc_sub": mn.perc_sub,
        "perc_add": mn.perc_add,
        "n_digits": mn.n_digits,
        "mlp_slices": 1,
        "op_position_name": f"P{mn.n_digits}",
        # ours, beyond the reference format
        "enrich": cfg.enrich,
        "fixes": cfg.fixes,
        "precision": cfg.precision,
        "n_ctx": Layout(mn.n_digits).n_ctx,
    }
    if losses is not None and len(losses):
        rec["avg_final_loss"] = round(float(np.mean(losses[-5:])), 9)
        rec["final_loss"] = float(losses[-1])
    return rec


def settings_differences(recorded: Mapping, cfg: TrainConfig) -> list[str]:
    """The settings in which a recorded `Config` (of a train json or a checkpoint) differs from `cfg`, as
    `d_model 30 != 510` (recorded != requested); [] when they are the same. Keys an older record lacks are not
    compared."""
    wanted = config_record(cfg)
    out = []
    for key in SETTING_KEYS:
        if key not in recorded:
            continue
        old, new = recorded[key], wanted[key]
        if isinstance(old, int | float) and not isinstance(old, bool) and isinstance(new, int | float):
            same = not isinstance(new, bool) and math.isclose(old, new, rel_tol=1e-9, abs_tol=0.0)
        else:
            same = old == new
        if not same:
            out.append(f"{key} {_shown(old)} != {_shown(new)}")
    return out


def _shown(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def checkpoint_config(ckpt: str | Path) -> dict | None:
    """The `Config` record a checkpoint was saved under (None: none kept, as in checkpoints of older versions)."""
    try:
        data = json.loads((Path(ckpt) / CHECKPOINT_CONFIG).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _insert_spec(cfg: TrainConfig, main_shape: ModelShape) -> tuple[InsertSpec, dict[str, torch.Tensor]]:
    mn = cfg.model_name
    path = Path(cfg.insert_weights)
    ins_name = parse_name(path.name[:-4] if path.name.endswith(".pth") else path.stem)
    ins_shape = ModelShape.for_name(ins_name, main_shape.d_model, main_shape.d_head, main_shape.d_mlp)
    check_pair(mn, ins_name, f"insert weights {path.name}")
    sd = read_state_dict(path)
    check_state_dict(sd, ins_shape, str(path))
    useful: tuple[tuple[int, int], ...] = ()
    if mn.insert_mode == 2 or (mn.insert_mode in (3, 4) and cfg.fixes):
        behavior = path.with_name(path.name[:-4] + "_behavior.json")
        if not behavior.is_file():
            raise InputError(f"ins{mn.insert_mode} needs the insert model's useful nodes: {behavior} is missing")
        useful = useful_heads_from_behavior(behavior)
    spec = InsertSpec(mn.insert_mode, ins_name.n_layers, ins_name.n_heads, cfg.fixes, useful)
    return spec, sd


def train(
    cfg: TrainConfig,
    paths: TrainPaths,
    resume: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
    on_progress: Callable[[dict], None] | None = None,
    interrupts: Interrupts | None = None,
    progress_stream: TextIO | None = None,
) -> TrainResult:
    """Train `cfg.name` into `paths`. Returns when done, after `stop_after` total steps, or (with
    `interrupts`, entered by the caller) after the step during which a signal came, with a checkpoint there
    and `stopped_by` set. Raises `Diverged` at the first step whose loss or gradient is not finite.

    The progress report and the one "resuming from step N" line go to `progress_stream` (default stderr) on
    the main process. `on_progress(record)` gets {name, step, steps, loss, steps_per_s} every `log_every`
    steps (main process)."""
    mn = cfg.model_name
    steps = mn.steps
    shape = cfg.shape
    layout = Layout(mn.n_digits)
    mix = cfg.op_mix
    within_batch = mn.grokfast and len(mix.ops) > 1  # the reference's GrokFast generator mixes inside a batch

    accelerator = _make_accelerator(cfg.precision)
    world, rank = accelerator.num_processes, accelerator.process_index
    if cfg.batch_size % world:
        raise InputError(f"batch size {cfg.batch_size} does not split evenly across {world} processes")
    local = cfg.batch_size // world
    rows = slice(rank * local, (rank + 1) * local)

    model = Transformer(shape)
    model.reset_parameters(torch.Generator().manual_seed(init_seed(mn.seed)))
    spec = ins_sd = None
    if mn.insert_mode:
        spec, ins_sd = _insert_spec(cfg, shape)
        first_copy(dict(model.named_parameters()), ins_sd, spec)
    # the fused kernel (CPU and CUDA) is several times faster than per-tensor ops, and just as deterministic
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(cfg.beta1, cfg.beta2), fused=True
    )
    scheduler = _scheduler(optimizer, steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    state = _Progress(steps)
    grokfast = _GrokFast(model.parameters(), cfg.fixes) if mn.grokfast else None
    accelerator.register_for_checkpointing(scheduler, state)
    if grokfast is not None and grokfast.fixes:
        accelerator.register_for_checkpointing(grokfast)
    if ins_sd is not None:
        ins_sd = {k: v.to(accelerator.device) for k, v in ins_sd.items()}
    live = dict(accelerator.unwrap_model(model).named_parameters())

    stream = progress_stream if progress_stream is not None else sys.stderr
    if resume and (ckpt := newest_checkpoint(paths.checkpoints)) is not None:
        _load_checkpoint(accelerator, ckpt, cfg)
        if accelerator.is_main_process:
            print(f"{cfg.name}: resuming from step {state.step} ({ckpt})", file=stream, flush=True)
    elif not resume and accelerator.is_main_process and paths.checkpoints.exists():
        shutil.rmtree(paths.checkpoints)
    accelerator.wait_for_everyone()
    saved = state.step  # the step the newest checkpoint on disk holds (0 and none: nothing to keep)

    from arith.progress import progress as progress_report

    bar = progress_report(
        steps,
        desc=cfg.name,
        unit="step",
        initial=state.step,
        enabled=progress and accelerator.is_main_process,
        stream=stream,
    )
    end = steps if stop_after is None else min(steps, stop_after)
    ans = slice(layout.answer_start, layout.n_ctx)
    model.train()
    losses_dev = torch.zeros(steps, dtype=torch.float64, device=accelerator.device)
    synced_to = state.step
    t_last = time.monotonic()
    params = [p for p in model.parameters() if p.requires_grad]
    stopped_by: str | None = None

    def sync_losses():
        nonlocal synced_to
        if state.step > synced_to:
            state.losses[synced_to : state.step] = losses_dev[synced_to : state.step].cpu().numpy()
            synced_to = state.step

    while state.step < end:
        step = state.step
        x, y, op = training_batch(mn.seed, step, mn.n_digits, mix, cfg.batch_size, cfg.enrich, within_batch)
        tokens = torch.from_numpy(encode(x[rows], y[rows], op[rows])).to(accelerator.device, non_blocking=True)
        logits = model(tokens, logit_positions=layout.predict_slice)
        loss = answer_nll(logits, tokens[:, ans]).mean()
        accelerator.backward(loss)
        if grokfast is not None:
            grokfast.apply()
        mean_loss, stop = _agree(accelerator, loss.detach(), interrupts, world)
        grad_max = torch.nn.utils.get_total_norm([p.grad for p in params], norm_type=math.inf)
        finite = torch.isfinite(torch.stack([mean_loss.float(), grad_max.float()]))
        if not bool(finite.all()):  # one host sync per step; the same verdict on every rank (reduced loss, grads)
            bar.close()
            raise _diverged(cfg, step + 1, float(mean_loss), float(grad_max), saved)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if spec is not None and spec.recopy_due(step):
            periodic_copy(live, ins_sd, spec, shape.n_heads)
        losses_dev[step] = mean_loss
        state.step = step + 1
        done = state.step
        if done % cfg.log_every == 0 or done == end:
            sync_losses()
            if accelerator.is_main_process:
                bar.set_postfix(loss=f"{state.losses[done - 1]:.3g}")
                bar.update(done - bar.n)
                rate = cfg.log_every / max(1e-9, time.monotonic() - t_last)
                t_last = time.monotonic()
                if on_progress is not None:
                    on_progress(
                        {
                            "name": cfg.name,
                            "step": done,
                            "steps": steps,
                            "loss": float(state.losses[done - 1]),
                            "steps_per_s": rate,
                        }
                    )
        if done % cfg.checkpoint_every == 0:
            sync_losses()
            _save_checkpoint(accelerator, paths.checkpoints, done, cfg)
            saved = done
        if stop is not None:
            stopped_by = stop
            break
    bar.close()
    sync_losses()
    if state.step < steps and state.step > saved:  # --stop-after, or a signal: keep every step done
        _save_checkpoint(accelerator, paths.checkpoints, state.step, cfg)

    weights, train_json = paths.weights, paths.train_json
    complete = state.step >= steps
    if complete and accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        save_weights(unwrapped, weights)
        atomic_write_json(
            train_json, {"Config": config_record(cfg, state.losses), "TrainingLoss": state.losses.tolist()}
        )
    accelerator.wait_for_everyone()
    final = float(state.losses[state.step - 1]) if state.step else None
    return TrainResult(cfg.name, weights, train_json, state.step, complete, final, None if complete else stopped_by)


def _agree(
    accelerator, loss: torch.Tensor, interrupts: Interrupts | None, world: int
) -> tuple[torch.Tensor, str | None]:
    """(the loss averaged over the ranks, the signal some rank caught or None): one all-reduce under DDP, so
    every rank stops after the same step, names the same signal and judges the same loss."""
    caught = interrupts.caught if interrupts is not None else None
    if world == 1:
        return loss, caught
    names = tuple(signal.Signals(s).name for s in Interrupts.SIGNALS)
    flags = torch.tensor([float(caught == n) for n in names], dtype=torch.float64, device=loss.device)
    both = accelerator.reduce(torch.cat([loss.to(torch.float64).reshape(1), flags]), reduction="mean")
    seen = [n for n, f in zip(names, both[1:].tolist(), strict=True) if f > 0]
    return both[0], seen[0] if seen else None


def _diverged(cfg: TrainConfig, step: int, loss: float, grad_max: float, saved: int) -> Diverged:
    what = f"loss is {loss}" if not math.isfinite(loss) else f"gradient is {grad_max} (loss {loss:.3g})"
    kept = f"the last good checkpoint (step {saved}) is kept" if saved else "no checkpoint had been written yet"
    return Diverged(
        f"{cfg.name}: {what} at step {step} (--lr {cfg.lr:g}); training stopped, {kept}; no weights written",
        step,
        saved or None,
    )


def _load_checkpoint(accelerator, ckpt: Path, cfg: TrainConfig) -> None:
    """Resume from `ckpt`; CheckpointError when it was saved under other settings or cannot be read."""
    from safetensors import SafetensorError

    recorded = checkpoint_config(ckpt)
    if recorded is not None and (diff := settings_differences(recorded, cfg)):
        raise CheckpointError(f"checkpoint {ckpt} was saved with other settings ({', '.join(diff)})")
    try:
        accelerator.load_state(str(ckpt))
    except (RuntimeError, OSError, ValueError, KeyError, EOFError, pickle.UnpicklingError, SafetensorError) as exc:
        why = f"{type(exc).__name__}: {exc}".splitlines()[0].rstrip(":")
        raise CheckpointError(f"checkpoint {ckpt} does not fit this model or is damaged ({why})") from None


def _save_checkpoint(accelerator, ckdir: Path, step: int, cfg: TrainConfig) -> None:
    final = ckdir / f"step_{step:08d}"
    tmp = ckdir / f".tmp_step_{step:08d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        ckdir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_json(tmp / CHECKPOINT_CONFIG, config_record(cfg))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in sorted(ckdir.glob("step_*"))[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
