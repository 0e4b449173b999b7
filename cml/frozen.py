"""The frozen bottom of the encoder run once over every sentence of a dataset (and cached on
disk), so that training only runs the layers that learn."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import torch

from cml.cache import fingerprint, memo
from cml.encoder import RelationEncoder
from cml.tokens import PAD_MULTIPLE, EncodedSplit


def frozen_states(
    encoder: RelationEncoder,
    split: EncodedSplit,
    pad_id: int,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    precision=contextlib.nullcontext,
) -> torch.Tensor:
    """fp16 outputs of the frozen bottom for every word piece of `split`, flat like `split.ids`.
    `precision`: the context the layers run in (fp32 by default, exact for the disk cache; the
    learner's bf16 autocast for the sentences it makes during a run, such as augmented memory)."""
    from tqdm import tqdm

    out = torch.empty(len(split.ids), encoder.backbone.config.hidden_size, dtype=torch.float16)
    by_length = torch.argsort(split.lengths, stable=True)
    encoder.eval()
    for chunk in tqdm(by_length.split(batch_size), desc=f"frozen layers 1-{encoder.frozen_layers}", leave=False):
        batch = split.batch(chunk, pad_id)
        with precision():
            hidden = encoder.bottom(batch["input_ids"].to(device), batch["attention_mask"].to(device)).float().cpu()
        mask = batch["attention_mask"].bool()
        rows = (split.offsets[chunk][:, None] + torch.arange(mask.shape[1])[None, :])[mask]
        out[rows] = hidden[mask].half()
    return out


def frozen_states_cached(
    encoder: RelationEncoder,
    split: EncodedSplit,
    pad_id: int,
    cache_dir: Path | None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """`frozen_states`, memoised on disk by the frozen weights themselves (the encoder, its marker
    embeddings, the seed of a random one), the word pieces and the padding (batch shapes change
    the kernels' rounding)."""
    digest = hashlib.sha1(split.ids.numpy().tobytes())
    for module in encoder.frozen_modules():
        for tensor in module.state_dict().values():
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    key = fingerprint(encoder.frozen_layers, digest.hexdigest(), split.offsets[-1], PAD_MULTIPLE)
    path = Path(cache_dir) / f"frozen-{key}.pt" if cache_dir is not None else None
    return memo(path, lambda: frozen_states(encoder, split, pad_id, device=device))
