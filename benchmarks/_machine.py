"""What every benchmark prints first, and the ceiling that throughput is compared with."""

import os
import platform
import resource
import sys
import time

import torch
from torch import nn

from cml.device import autocast
from cml.tokens import EncodedSplit


def header() -> None:
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    print(f"command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {device}, torch {torch.__version__}"
    )


def peak_memory() -> str:
    rss = f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"
    if torch.cuda.is_available():
        rss += f", peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
    return rss


def spread_batches(lengths: torch.Tensor, batch_size: int, count: int) -> torch.Tensor:
    """`count` batches of the whole split sorted by length, evenly spaced over it: the split's
    range of lengths with as little padding as any batching can give (a random sample sorted by
    length pads more than a run's length-grouped batches do, and would put the ceiling low)."""
    batches = torch.argsort(lengths, stable=True).split(batch_size)
    picks = torch.linspace(0, len(batches) - 1, min(count, len(batches))).round().long()
    return torch.cat([batches[i] for i in picks.tolist()])


REPEATS = 3  # timed passes of a ceiling; the fastest counts (the others met some other load)


def _best_rate(one_pass, examples: int, device) -> float:
    """Examples/s of the fastest of `REPEATS` timed passes of `one_pass`, after one warm-up pass
    (the kernels for each shape are built on first use)."""

    def timed() -> float:
        start = time.perf_counter()
        one_pass()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    timed()
    return examples / min(timed() for _ in range(REPEATS))


def forward_backward_rate(
    model, split: EncodedSplit, indices: torch.Tensor, batch_size: int, pad_id: int, device, precision: str
) -> tuple[float, float]:
    """(examples/s, padding fraction) of forward + backward of the layers that train (the frozen
    layers' outputs come from the cache, as in a run) over `indices` in batches of `batch_size`,
    in the order given. No optimiser step, no evaluation: the ceiling of training speed."""
    seen = torch.ones(model.classifier.out_features, dtype=torch.bool, device=device)
    batches = [{k: v.to(device) for k, v in split.batch(b, pad_id).items()} for b in indices.split(batch_size)]
    slots = sum(b["attention_mask"].numel() for b in batches)
    real = sum(int(b["attention_mask"].sum()) for b in batches)

    def one_pass():
        for batch in batches:
            with autocast(device, precision):
                logits = model(batch, seen).logits
            model.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(logits.float(), batch["labels"]).backward()

    model.train()
    return _best_rate(one_pass, len(indices), device), 1 - real / slots


@torch.no_grad()
def forward_rate(
    model, split: EncodedSplit, indices: torch.Tensor, batch_size: int, pad_id: int, device, precision: str
) -> float:
    """Examples/s of forward alone (eval mode, no gradient) of the layers that run, in batches of
    `batch_size` in the order given: the ceiling of evaluation, memory encoding and teacher passes."""
    seen = torch.ones(model.classifier.out_features, dtype=torch.bool, device=device)
    batches = [{k: v.to(device) for k, v in split.batch(b, pad_id).items()} for b in indices.split(batch_size)]

    def one_pass():
        for batch in batches:
            with autocast(device, precision):
                model(batch, seen)

    model.eval()
    return _best_rate(one_pass, len(indices), device)
