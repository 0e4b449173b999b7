import pytest
import torch

from cml.config import RunConfig
from cml.device import autocast, native_bf16, resolve_precision, to_device
from cml.errors import CMLInputError
from cml.tokens import tokenize

CPU = torch.device("cpu")


def test_auto_precision_follows_the_hardware_and_explicit_choices_stand():
    assert resolve_precision("auto", CPU) == ("bf16" if native_bf16(CPU) else "fp32")
    assert resolve_precision("fp32", CPU) == "fp32" and resolve_precision("bf16", CPU) == "bf16"
    with pytest.raises(CMLInputError, match="train.precision is 'fp16'"):
        config = RunConfig()
        config.train.precision = "fp16"
        config.check()


def test_bf16_autocast_computes_in_bf16_and_close_to_fp32(tiny, demo):
    tokenizer, encoder = tiny
    batch = tokenize(tokenizer, demo.test[:32], demo.label_of).batch(range(32))
    encoder.eval()
    with torch.no_grad():
        exact = encoder(**batch)
        with autocast(CPU, "bf16"):
            low = encoder(**batch)
        with autocast(CPU, "fp32"):
            same = encoder(**batch)
    torch.testing.assert_close(same, exact)
    # bf16 products keep 8 bits of mantissa: a relative error of a few 2^-8, and never exactly fp32
    assert 0 < ((low.float() - exact).norm() / exact.norm()).item() < 3e-2


def test_a_split_on_another_device_gathers_its_batches_there(tiny, demo):
    """What the GPU path does, on the `meta` device: word pieces and cached states live on the
    device and batches are gathered there; the small fields stay on the CPU for the engine to move."""
    tokenizer, _ = tiny
    split = tokenize(tokenizer, demo.test[:10], demo.label_of)
    split.hidden = torch.zeros(len(split.ids), 8, dtype=torch.float16)
    moved = split.to(torch.device("meta"))
    assert moved.ids.is_meta and moved.hidden.is_meta and not moved.offsets.is_meta
    batch = moved.batch([1, 4, 7])
    width = -(-int(split.lengths[[1, 4, 7]].max()) // 8) * 8  # the longest, rounded up to a multiple of 8
    assert batch["input_ids"].is_meta and batch["hidden"].is_meta and batch["attention_mask"].is_meta
    assert batch["input_ids"].shape == (3, width) and batch["hidden"].shape == (3, width, 8)
    assert not batch["labels"].is_meta and not batch["head_pos"].is_meta
    assert to_device(batch["labels"], torch.device("meta")).is_meta
    assert to_device(batch["labels"], CPU) is batch["labels"]
