"""Memory augmentation (CEAR): new training sentences made from the memory, on word-piece ids.

- `swap`: each memory sentence gets the head and tail mentions of a random sentence of its own
  relation (possibly itself), between the same markers; label kept. Memory x 2.
- `full`: `swap`, then each of those sentences is joined to a random sentence of another relation
  with that one's markers removed, after it (even positions) or before it (odd positions); label
  kept. The joined sentence is cut so the total stays within `max_length` word pieces. Memory x 4.

`reverse_entities` (ACA's reversed classes, Wang et al. 2022) swaps the head and tail markers of a
sentence, so its tail is read as the head: the relation in the other direction. `hybrid_entities`
(ACA's hybrid classes) joins the head of one sentence and the tail of another, each with a few
words of its context, so neither sentence's relation holds: a class only both contexts tell.

Markers and labels stay valid: each new sentence has exactly one of each marker, `head_pos` and
`tail_pos` point at its [E11] and [E21], and it starts with [CLS] and ends with [SEP].
"""

from __future__ import annotations

import numpy as np
import torch

from cml.config import choices
from cml.tokens import EncodedSplit


def _sequences(split: EncodedSplit, indices: torch.Tensor) -> list[np.ndarray]:
    ids, offsets = split.ids.cpu().numpy(), split.offsets.numpy()
    return [ids[offsets[i] : offsets[i + 1]] for i in indices.tolist()]


def _positions(seq: np.ndarray, markers: tuple[int, int, int, int]) -> list[int]:
    """Where [E11], [E12], [E21] and [E22] stand in `seq` (each once)."""
    return [int(np.flatnonzero(seq == m)[0]) for m in markers]


def _pieces(
    seq: np.ndarray, markers: tuple[int, int, int, int]
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, bool]:
    """(the sequence cut at the markers, with the two mention contents left out; head content;
    tail content; whether the head comes first)."""
    e11, e12, e21, e22 = _positions(seq, markers)
    head, tail = seq[e11 + 1 : e12], seq[e21 + 1 : e22]
    if e11 < e21:
        rest = [seq[: e11 + 1], seq[e12 : e21 + 1], seq[e22:]]
    else:
        rest = [seq[: e21 + 1], seq[e22 : e11 + 1], seq[e12:]]
    return rest, head, tail, e11 < e21


def swap_entities(seq: np.ndarray, partner: np.ndarray, markers: tuple[int, int, int, int]) -> np.ndarray:
    """`seq` with its head and tail mentions replaced by `partner`'s."""
    (a, b, c), _, _, head_first = _pieces(seq, markers)
    _, head, tail, _ = _pieces(partner, markers)
    first, second = (head, tail) if head_first else (tail, head)
    return np.concatenate([a, first, b, second, c])


def concatenate(
    seq: np.ndarray, partner: np.ndarray, markers: tuple[int, int, int, int], after: bool, max_length: int
) -> np.ndarray:
    """`seq` with `partner`'s words (no [CLS], [SEP] or markers) after or before it, cut to `max_length`."""
    words = partner[1:-1]
    words = words[~np.isin(words, markers)][: max(0, max_length - len(seq))]
    if after:
        return np.concatenate([seq[:-1], words, seq[-1:]])
    return np.concatenate([seq[:1], words, seq[1:]])


def reverse_entities(
    split: EncodedSplit, indices: torch.Tensor, labels: torch.Tensor, markers: tuple[int, int, int, int]
) -> EncodedSplit:
    """The sentences `indices` of `split` with [E11] <-> [E21] and [E12] <-> [E22], labelled `labels`.
    Word pieces and positions only: the frozen layers' states of the new sentences are not copied."""
    e11, e12, e21, e22 = markers
    part = split.subset(indices)
    ids = part.ids.clone()
    for a, b in ((e11, e21), (e12, e22)):
        ids[part.ids == a], ids[part.ids == b] = b, a
    return EncodedSplit(
        ids=ids, offsets=part.offsets, head_pos=part.tail_pos, tail_pos=part.head_pos, labels=labels.clone()
    )


HYBRID_CONTEXT = 5  # word pieces of context kept on each side of a hybrid's entity (ACA's)


def _hybrid(first: np.ndarray, second: np.ndarray, markers: tuple[int, int, int, int]) -> np.ndarray:
    """[CLS], `first`'s head mention between its markers with up to HYBRID_CONTEXT word pieces on
    each side (cut before its tail marker), `second`'s tail mention likewise (cut after its head's
    closing marker), [SEP]. Both sentences have their head first."""
    (e11, e12, e21, _), (_, f12, f21, f22) = _positions(first, markers), _positions(second, markers)
    assert e11 < e21 and f12 < f21, "a hybrid is made of sentences with the head before the tail"
    c = HYBRID_CONTEXT
    head = first[max(1, e11 - c) : min(e12 + 1 + c, e21)]
    tail = second[max(f12 + 1, f21 - c) : min(f22 + 1 + c, len(second) - 1)]
    return np.concatenate([first[:1], head, tail, first[-1:]])


def hybrid_entities(
    split: EncodedSplit,
    first: torch.Tensor,
    second: torch.Tensor,
    labels: torch.Tensor,
    markers: tuple[int, int, int, int],
) -> EncodedSplit:
    """The hybrid sentences of the pairs (`first[i]`, `second[i]`) of `split`, labelled `labels`.
    Word pieces and positions only: the frozen layers' states are not made here."""
    seqs = [_hybrid(a, b, markers) for a, b in zip(_sequences(split, first), _sequences(split, second))]
    return _from_sequences(seqs, labels.tolist(), markers)


def _from_sequences(seqs: list[np.ndarray], labels: list[int], markers: tuple[int, int, int, int]) -> EncodedSplit:
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    flat = np.concatenate(seqs).astype(np.int32) if seqs else np.zeros(0, dtype=np.int32)
    return EncodedSplit(
        ids=torch.from_numpy(flat),
        offsets=torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)])).long(),
        head_pos=torch.tensor([int(np.flatnonzero(s == markers[0])[0]) for s in seqs], dtype=torch.long),
        tail_pos=torch.tensor([int(np.flatnonzero(s == markers[2])[0]) for s in seqs], dtype=torch.long),
        labels=torch.tensor(labels, dtype=torch.long),
    )


def augment(
    split: EncodedSplit,
    indices: torch.Tensor,
    kind: str,
    markers: tuple[int, int, int, int],
    max_length: int,
    generator: torch.Generator,
) -> EncodedSplit:
    """A new split of the sentences `indices` of `split` (first, in that order) and their augmentations."""
    if kind not in choices("train.augment"):
        raise ValueError(f"unknown augmentation {kind!r}: use one of {choices('train.augment')}")
    seqs = _sequences(split, indices)
    labels = split.labels[indices].tolist()
    pick = lambda n: int(torch.randint(n, (1,), generator=generator))
    if kind in ("swap", "full"):
        by_label: dict[int, list[int]] = {}
        for i, y in enumerate(labels):
            by_label.setdefault(y, []).append(i)
        seqs = seqs + [
            swap_entities(s, seqs[by_label[y][pick(len(by_label[y]))]], markers) for s, y in zip(seqs, labels)
        ]
        labels = labels + labels
    if kind == "full":
        mixed = len(set(labels)) > 1
        joined = []
        for i, (s, y) in enumerate(zip(seqs, labels)):
            j = pick(len(seqs))
            while mixed and labels[j] == y:  # a partner of another relation, where there is one
                j = pick(len(seqs))
            joined.append(concatenate(s, seqs[j], markers, after=i % 2 == 0, max_length=max_length))
        seqs, labels = seqs + joined, labels + labels
    return _from_sequences(seqs, labels, markers)
