import torch

from cml.data.records import MARKERS, RelationExample
from cml.encoder import RelationEncoder, build_encoder
from cml.tokens import tokenize, tokenize_cached


def test_markers_are_atomic_and_positions_point_at_them(tiny, demo):
    tokenizer, _ = tiny
    split = tokenize(tokenizer, demo.train[:50], demo.label_of)
    e11, e21 = tokenizer.convert_tokens_to_ids(["[E11]", "[E21]"])
    for i in range(50):
        seq = split.ids[split.offsets[i] : split.offsets[i + 1]]
        assert seq[split.head_pos[i]] == e11 and seq[split.tail_pos[i]] == e21
        assert (seq == e11).sum() == 1
        words = tokenizer.convert_ids_to_tokens(seq.tolist())
        start = int(split.head_pos[i]) + 1
        head = words[start : words.index("[E12]")]
        assert tokenizer.convert_tokens_to_string(head) == demo.train[i].head_text


def test_dynamic_padding_pads_to_the_longest_in_the_batch_rounded_up_to_a_multiple_of_8(tiny, demo):
    tokenizer, encoder = tiny
    split = tokenize(tokenizer, demo.train[:20], demo.label_of)
    lengths = split.lengths
    batch = split.batch([0, 5, 7])
    longest = int(lengths[[0, 5, 7]].max())
    width = batch["input_ids"].shape[1]
    assert batch["input_ids"].shape[0] == 3 and width % 8 == 0 and longest <= width < longest + 8
    assert (batch["input_ids"][:, longest:] == tokenizer.pad_token_id).all()
    assert batch["attention_mask"].sum(1).tolist() == lengths[[0, 5, 7]].tolist()
    out = encoder.eval()(**batch)
    assert out.shape == (3, 2 * encoder.backbone.config.hidden_size)
    # padding does not change a sentence's representation
    alone = encoder(**split.batch([5]))
    torch.testing.assert_close(out[1], alone[0], atol=1e-5, rtol=1e-4)


def test_truncation_keeps_both_entities(tiny, demo):
    tokenizer, _ = tiny
    words = tuple(f"w{i}" for i in range(300))
    far = RelationExample(words, (3, 5), (280, 282), demo.relations[0])
    near = RelationExample(words, (150, 151), (160, 162), demo.relations[0])
    split = tokenize(tokenizer, [far, near], demo.label_of, max_length=64)
    assert split.lengths.tolist() == [64, 64]
    for i in range(2):
        seq = tokenizer.convert_ids_to_tokens(split.ids[split.offsets[i] : split.offsets[i + 1]].tolist())
        assert all(m in seq for m in MARKERS) and seq[0] == "[CLS]" and seq[-1] == "[SEP]"


def test_disk_cache_gives_the_same_tokens(tiny, demo, tmp_path):
    tokenizer, _ = tiny
    first = tokenize_cached(tokenizer, demo.test, demo.label_of, 128, tmp_path)
    assert len(list(tmp_path.glob("tokens-*.pt"))) == 1
    second = tokenize_cached(tokenizer, demo.test, demo.label_of, 128, tmp_path)
    assert first.hidden is None and second.hidden is None
    for key in ("ids", "offsets", "head_pos", "tail_pos", "labels"):
        assert torch.equal(getattr(first, key), getattr(second, key))


def test_encoder_loads_from_a_local_path(tiny, tmp_path, demo):
    tokenizer, encoder = tiny
    encoder.backbone.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    tok2, enc2 = build_encoder(str(tmp_path))
    assert isinstance(enc2, RelationEncoder) and len(tok2) == len(tokenizer)
    batch = tokenize(tok2, demo.test[:4], demo.label_of).batch(range(4))
    torch.testing.assert_close(enc2.eval()(**batch), encoder.eval()(**batch))


def hf_entity_states(backbone, batch):
    """[E11] and [E21] states from Hugging Face's own forward of the whole model."""
    states = backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    rows = torch.arange(len(states))
    return torch.cat([states[rows, batch["head_pos"]], states[rows, batch["tail_pos"]]], dim=-1)


def test_last_layer_at_entity_positions_gives_the_full_models_states_and_gradients(demo):
    from cml.encoder import load_backbone, load_tokenizer

    torch.manual_seed(0)
    tokenizer = load_tokenizer("tiny")
    backbone = load_backbone("tiny", tokenizer, seed=1)
    backbone.config.num_hidden_layers = 3
    backbone = type(backbone)(backbone.config, add_pooling_layer=False).eval()  # 3 layers: a middle one too
    encoder = RelationEncoder(backbone)
    assert encoder.entity_only
    batch = tokenize(tokenizer, demo.train[::37], demo.label_of).batch(range(22))
    assert batch["attention_mask"].float().mean() < 0.95  # some padding, so the mask matters
    target = torch.randn(22, encoder.out_dim)

    def gradients(states):
        backbone.zero_grad()
        (states * target).sum().backward()
        return {n: p.grad.clone() for n, p in backbone.named_parameters() if p.grad is not None}

    ours, reference = encoder(**batch), hf_entity_states(backbone, batch)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    mine, theirs = gradients(encoder(**batch)), gradients(hf_entity_states(backbone, batch))
    assert mine.keys() == theirs.keys() and len(mine) > 0
    scale = max(g.abs().max() for g in theirs.values())  # the key bias's gradient is 0 up to rounding
    for name in theirs:
        torch.testing.assert_close(mine[name] / scale, theirs[name] / scale, atol=1e-5, rtol=1e-4, msg=name)


def test_cached_frozen_layers_give_the_logits_of_the_full_model(tiny, demo):
    from cml.frozen import frozen_states

    tokenizer, full = tiny
    split = tokenize(tokenizer, demo.test[:40], demo.label_of)
    frozen = RelationEncoder(full.backbone, frozen_layers=1)
    split.hidden = frozen_states(frozen, split, tokenizer.pad_token_id)
    batch = split.batch(list(range(0, 40, 3)))
    cached = frozen.eval()(**batch)
    uncached = frozen(**{k: v for k, v in batch.items() if k != "hidden"})
    reference = hf_entity_states(full.backbone.eval(), batch)
    torch.testing.assert_close(uncached, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cached, reference, atol=2e-2, rtol=1e-2)  # fp16 storage
    assert all(not p.requires_grad for p in full.backbone.embeddings.parameters())
    assert all(p.requires_grad for p in full.backbone.encoder.layer[1].parameters())
    frozen.train()
    assert not full.backbone.embeddings.training and full.backbone.encoder.layer[1].training
    full.backbone.requires_grad_(True)


def test_the_frozen_state_cache_tells_apart_encoders_that_differ_only_by_seed(tmp_path, demo):
    """A random encoder (or random marker embeddings) draws its weights from the seed: a cache
    keyed by the encoder's name would hand one seed's states to another."""
    from cml.encoder import build_encoder
    from cml.frozen import frozen_states, frozen_states_cached

    for seed in (0, 1, 0):
        tokenizer, encoder = build_encoder("tiny", seed=seed, frozen_layers=1)
        split = tokenize(tokenizer, demo.test[:20], demo.label_of)
        cached = frozen_states_cached(encoder, split, tokenizer.pad_token_id, tmp_path)
        torch.testing.assert_close(cached, frozen_states(encoder, split, tokenizer.pad_token_id), atol=0, rtol=0)
    assert len(list(tmp_path.iterdir())) == 2  # the third call read seed 0's file


def test_length_grouped_batches_cover_every_index_once_with_little_padding(tiny, demo):
    tokenizer, _ = tiny
    split = tokenize(tokenizer, demo.train, demo.label_of)
    indices = torch.arange(0, len(split), 2)  # 400 examples

    def padding(batches):
        slots = sum(len(b) * int(split.lengths[b].max()) for b in batches)
        return 1 - sum(int(split.lengths[b].sum()) for b in batches) / slots

    torch.manual_seed(0)
    grouped = split.length_grouped(indices, batch_size=16, window=50)
    torch.manual_seed(0)
    again = split.length_grouped(indices, batch_size=16, window=50)
    torch.manual_seed(0)
    shuffled = split.length_grouped(indices, batch_size=16, window=1)
    for batches in (grouped, shuffled):
        assert sorted(torch.cat(batches).tolist()) == indices.tolist()
        assert sorted(len(b) for b in batches) == [16] * 25
    assert all(torch.equal(a, b) for a, b in zip(grouped, again))
    assert padding(grouped) < 0.05 and padding(shuffled) > 0.15
    # the batches still come in random order, not shortest first
    longest = [int(split.lengths[b].max()) for b in grouped]
    assert longest != sorted(longest)


def test_markers_start_as_punctuation(tiny):
    from cml.encoder import MARKER_SOURCES, load_backbone

    tokenizer, _ = tiny
    ids = lambda tokens: tokenizer.convert_tokens_to_ids(list(tokens))
    punct = load_backbone("tiny", tokenizer, seed=0, marker_init="punct").get_input_embeddings().weight
    torch.testing.assert_close(punct[ids(MARKERS)], punct[ids(MARKER_SOURCES)])
    randomly = load_backbone("tiny", tokenizer, seed=0, marker_init="random").get_input_embeddings().weight
    assert not torch.allclose(randomly[ids(MARKERS)], randomly[ids(MARKER_SOURCES)])
    unmarked = [i for i in range(len(tokenizer)) if i not in ids(MARKERS)]
    torch.testing.assert_close(punct[unmarked], randomly[unmarked])  # nothing else changes
