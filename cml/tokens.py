"""Tokenisation with entity markers, once per dataset (cached), into a flat container of word
pieces that batches are cut from.

The sentence is read as `[E11] head [E12] ... [E21] tail [E22]` (docs/method.md, "The model").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cml.cache import fingerprint, memo
from cml.data.records import MARKERS, RelationExample
from cml.device import to_device

# Batches are padded to a multiple of this: a few shapes instead of one per sentence length, so
# oneDNN (CPU bf16) keeps a few compiled kernels instead of one per shape (measured: 470 MB less
# peak memory on a 40-relation FewRel run, the same speed within noise).
PAD_MULTIPLE = 8


@dataclass
class EncodedSplit:
    """Word-piece ids of a list of examples, stored flat; batches are padded only to their own longest."""

    ids: torch.Tensor  # int32, all sequences concatenated
    offsets: torch.Tensor  # int64 [n + 1]
    head_pos: torch.Tensor  # int64 [n], position of [E11]
    tail_pos: torch.Tensor  # int64 [n], position of [E21]
    labels: torch.Tensor  # int64 [n]
    hidden: torch.Tensor | None = None  # fp16 [len(ids), hidden]: frozen-layer outputs, when cached
    cut: int = 0  # sentences longer than the maximum length, cut around their entities
    lost_markers: int = 0  # of those, the ones whose cut lost an entity's closing marker

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def to(self, device: torch.device) -> EncodedSplit:
        """The word pieces and cached states on `device` (a GPU: batches are then gathered there,
        with no copy of the bulk per step); the small per-example fields stay on the CPU."""
        hidden = self.hidden.to(device) if self.hidden is not None else None
        return dataclasses.replace(self, ids=self.ids.to(device), hidden=hidden)

    def subset(self, indices: torch.Tensor) -> EncodedSplit:
        """The examples `indices`, in that order, with their word pieces and cached states."""
        starts, lengths = self.offsets[indices], self.lengths[indices]
        rows = torch.cat([torch.arange(s, s + n) for s, n in zip(starts.tolist(), lengths.tolist())])
        rows = to_device(rows, self.ids.device)
        return EncodedSplit(
            ids=self.ids[rows],
            offsets=torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)]),
            head_pos=self.head_pos[indices],
            tail_pos=self.tail_pos[indices],
            labels=self.labels[indices],
            hidden=self.hidden[rows] if self.hidden is not None else None,
        )

    @staticmethod
    def concatenate(splits: list[EncodedSplit]) -> EncodedSplit:
        """The examples of `splits`, one after the other (cached states kept where all have them)."""
        lengths = torch.cat([s.lengths for s in splits])
        hidden = [s.hidden for s in splits]
        return EncodedSplit(
            ids=torch.cat([s.ids for s in splits]),
            offsets=torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)]),
            head_pos=torch.cat([s.head_pos for s in splits]),
            tail_pos=torch.cat([s.tail_pos for s in splits]),
            labels=torch.cat([s.labels for s in splits]),
            hidden=torch.cat(hidden) if all(h is not None for h in hidden) else None,
        )

    def batch(self, index, pad_id: int = 0) -> dict[str, torch.Tensor]:
        """One batch padded to its longest sentence; word pieces and states come on the device
        they are stored on, the rest on the CPU."""
        index = torch.as_tensor(index, dtype=torch.long)
        starts, lengths = self.offsets[index], self.lengths[index]
        width = -(-int(lengths.max()) // PAD_MULTIPLE) * PAD_MULTIPLE
        cols = torch.arange(width)
        gather = to_device((starts[:, None] + cols[None, :]).clamp(max=len(self.ids) - 1), self.ids.device)
        mask = to_device(cols[None, :] < lengths[:, None], self.ids.device)
        input_ids = torch.where(mask, self.ids[gather].long(), torch.full_like(gather, pad_id))
        extra = {"hidden": self.hidden[gather] * mask[..., None]} if self.hidden is not None else {}
        return {
            **extra,
            "input_ids": input_ids,
            "attention_mask": mask.long(),
            "head_pos": self.head_pos[index],
            "tail_pos": self.tail_pos[index],
            "labels": self.labels[index],
        }

    def length_grouped(self, indices: torch.Tensor, batch_size: int, window: int) -> list[torch.Tensor]:
        """Training batches of `indices` with little padding and still random content: shuffle,
        sort each window of `window` batches by length, cut it into batches, shuffle the batches.
        `window` 1 is a plain shuffle. Draws from torch's global generator."""
        shuffled = indices[torch.randperm(len(indices))]
        batches = [
            batch
            for part in shuffled.split(batch_size * window)
            for batch in part[torch.argsort(self.lengths[part], stable=True)].split(batch_size)
        ]
        return [batches[i] for i in torch.randperm(len(batches)).tolist()]

    def map(self, indices: torch.Tensor, fn, batch_size: int, pad_id: int = 0):
        """`fn(batch)` over the examples `indices`, in batches of similar length (little padding);
        the rows of the result follow `indices`. `fn` returns a tensor or a named tuple of tensors."""
        by_length = torch.argsort(self.lengths[indices], stable=True)
        parts = [fn(self.batch(indices[chunk], pad_id)) for chunk in by_length.split(batch_size)]

        def in_order(chunks: list[torch.Tensor]) -> torch.Tensor:
            result = torch.cat(chunks)
            result[by_length] = result.clone()
            return result

        if isinstance(parts[0], tuple):
            return type(parts[0])(*(in_order([p[i] for p in parts]) for i in range(len(parts[0]))))
        return in_order(parts)


def _marked_words(ex: RelationExample) -> list[str]:
    (hs, he), (ts, te) = ex.head, ex.tail
    inserts = {hs: ["[E11]"], ts: ["[E21]"]}
    closes = {he: ["[E12]"], te: ["[E22]"]}
    words: list[str] = []
    for i in range(len(ex.tokens) + 1):
        words += closes.get(i, []) + inserts.get(i, [])
        if i < len(ex.tokens):
            words.append(ex.tokens[i])
    return words


def _truncate(ids: np.ndarray, keep: tuple[int, int, int, int], max_length: int) -> np.ndarray:
    """Cut a too-long sequence to `max_length`, keeping [CLS], [SEP] and both marked entities."""
    cls, body, sep = ids[:1], ids[1:-1], ids[-1:]
    budget = max_length - 2
    lo, hi = min(keep) - 1, max(keep)  # positions in body
    if hi - lo + 1 <= budget:
        start = max(0, min(lo - (budget - (hi - lo + 1)) // 2, len(body) - budget))
        return np.concatenate([cls, body[start : start + budget], sep])
    half = budget // 2  # entities too far apart: a window around each
    h0, t0 = sorted([keep[0] - 1, keep[2] - 1])
    return np.concatenate([cls, body[h0 : h0 + half], body[t0 : t0 + budget - half], sep])


def tokenize(
    tokenizer, examples: list[RelationExample], label_of: dict[str, int], max_length: int = 128
) -> EncodedSplit:
    """Tokenise with entity markers in one batched call of the fast tokenizer."""
    marker_ids = tokenizer.convert_tokens_to_ids(list(MARKERS))
    if not examples:
        empty = torch.zeros(0, dtype=torch.long)
        return EncodedSplit(torch.zeros(0, dtype=torch.int32), torch.zeros(1, dtype=torch.long), empty, empty, empty)
    encoded = tokenizer([_marked_words(ex) for ex in examples], is_split_into_words=True, add_special_tokens=True)
    sequences, heads, tails, cut, lost = [], [], [], 0, 0
    for ids in encoded["input_ids"]:
        ids = np.asarray(ids, dtype=np.int32)
        if len(ids) > max_length:
            ids = _truncate(ids, tuple(int(np.flatnonzero(ids == m)[0]) for m in marker_ids), max_length)
            cut += 1
            lost += not all((ids == m).any() for m in marker_ids)
        heads.append(int(np.flatnonzero(ids == marker_ids[0])[0]))
        tails.append(int(np.flatnonzero(ids == marker_ids[2])[0]))
        sequences.append(ids)
    lengths = np.array([len(s) for s in sequences])
    return EncodedSplit(
        ids=torch.from_numpy(np.concatenate(sequences)),
        offsets=torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)])).long(),
        head_pos=torch.tensor(heads),
        tail_pos=torch.tensor(tails),
        labels=torch.tensor([label_of[ex.relation] for ex in examples]),
        cut=cut,
        lost_markers=lost,
    )


def tokenize_cached(
    tokenizer, examples: list[RelationExample], label_of: dict[str, int], max_length: int, cache_dir: Path | None
) -> EncodedSplit:
    """`tokenize`, memoised on disk by (tokenizer vocabulary, examples, labels, max length)."""
    key = fingerprint(
        tokenizer.name_or_path, len(tokenizer), max_length, sorted(label_of.items()), examples, "counts cuts"
    )
    path = Path(cache_dir) / f"tokens-{key}.pt" if cache_dir is not None else None
    return EncodedSplit(**memo(path, lambda: vars(tokenize(tokenizer, examples, label_of, max_length))))
