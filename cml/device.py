"""Where the learner computes and in what precision.

bf16 autocast (fp32 master weights, bf16 matrix products) is the default wherever the hardware
multiplies bf16 natively: a CUDA GPU with bf16, or a CPU with AVX512-BF16 or AMX, where it
trains MiniLM 1.9x faster. Elsewhere `auto` means fp32, because emulated bf16 is
slower than fp32. The precision a run used is stored in its config.yaml as `bf16` or `fp32`, so
resuming it on a machine that would choose differently is refused rather than mixing the two.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
from pathlib import Path

import torch

from cml.errors import CMLInputError

EVAL_BATCH = {"cpu": 128, "cuda": 1024}  # evaluation batches when train.eval_batch_size is not set


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CMLInputError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them in /proc/cpuinfo; none elsewhere (torch has
    no public query for bf16 support on a CPU), so `auto` is then fp32."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return frozenset(line.partition(":")[2].split())


def resolve_precision(name: str, device: torch.device) -> str:
    """`bf16` or `fp32` for a configured precision (`auto`, `bf16` or `fp32`) on `device`."""
    if name == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return name


def autocast(device: torch.device, precision: str):
    """The context the learner's forward passes run in."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def eval_batch_size(configured: int | None, device: torch.device) -> int:
    return configured or EVAL_BATCH.get(device.type, EVAL_BATCH["cpu"])


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor` on `device`; from the CPU to a GPU through pinned memory without waiting, so the
    next batch is prepared while the GPU still works on this one."""
    if tensor.device == device:
        return tensor
    if tensor.device.type == "cpu" and device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


@functools.cache
def _libc():
    return ctypes.CDLL(ctypes.util.find_library("c"))


def release_freed_memory() -> None:
    """Hand the heap memory that freed tensors leave behind back to the system (glibc keeps it,
    fragmented, after the transient peaks of training and evaluation; measured: 250 MB of a
    2.3 GB peak on a 40-relation FewRel run). A no-op where the C library has no malloc_trim."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)
