"""Device choice and autocast: CUDA paths are first-class, CPU is the fallback."""

from __future__ import annotations

import contextlib
import os

import torch

from arith.errors import InputError

PRECISIONS = ("fp32", "bf16")
VERIFY_PRECISIONS = ("auto", "fp32", "bf16")  # verification: auto = bf16 where the hardware has it, else fp32


def choose_device(name: str = "auto") -> torch.device:
    """ "auto" -> cuda:0 (the one GPU a worker/task sees) when CUDA is present, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {name!r} requested but CUDA is not available on this machine")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise InputError(f"unknown device {name!r}") from exc


def autocast(device: torch.device, precision: str = "fp32"):
    """bf16 autocast for matmuls on CUDA (or CPU when asked); fp32 is a no-op context."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r} (expected {' or '.join(PRECISIONS)})")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


NATIVE_BF16_ENV = "VARITH_NATIVE_BF16"
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 instructions that make bf16 matmuls faster than fp32


def bf16_supported(device: torch.device) -> bool:
    """Fast bf16 matmuls here: a CUDA device with native bf16 (not emulated), or a CPU with avx512_bf16 or AMX.

    oneDNN also "supports" bf16 on plain AVX-512 CPUs by emulation, which runs about 5x slower than fp32 (measured
    on an Ice Lake Xeon: 57 against 302 GFLOP/s), so the CPU's own instruction flags decide, not oneDNN's probe.

    The environment variable VARITH_NATIVE_BF16 (1 or 0) overrides the answer for every device: tests and
    benchmarks use it to exercise `--precision auto`'s choice on hardware without bf16 instructions."""
    override = os.environ.get(NATIVE_BF16_ENV, "").strip()
    if override in ("0", "1"):
        return override == "1"
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu":
        return False
    return bool(set(CPU_BF16_FLAGS) & cpu_flags())


def cpu_flags() -> set[str]:
    """The CPU's instruction-set flags: torch's own probe where it has one, else /proc/cpuinfo (Linux); empty
    when neither can be read."""
    probe = getattr(getattr(torch._C, "_cpu", None), "_get_cpu_capability", None)
    if probe is not None:
        try:
            return {name for name, value in probe().items() if value is True}
        except (RuntimeError, AttributeError, TypeError):  # pragma: no cover - older or newer torch
            pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:  # pragma: no cover - not Linux
        pass
    return set()


def resolve_precision(precision: str, device: torch.device) -> str:
    """The scoring precision a verification uses: "auto" -> "bf16" where supported (`bf16_supported`), else
    "fp32"; "fp32" and "bf16" as given."""
    if precision not in VERIFY_PRECISIONS:
        raise InputError(f"unknown precision {precision!r} (expected {', '.join(VERIFY_PRECISIONS)})")
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    return precision


def check_device_name(name: str) -> None:
    """InputError unless `name` is "auto" or a device torch can name (cpu, cuda, cuda:1, ...); the device need
    not exist here (a driver without a GPU may send work to GPU workers)."""
    if name == "auto":
        return
    try:
        torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {name!r}") from None
