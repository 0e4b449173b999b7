import torch

from cml.data.records import RelationExample
from cml.encoder import MARKERS, RelationEncoder, build_encoder, tokenize, tokenize_cached


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


def test_dynamic_padding_pads_to_the_longest_in_the_batch(tiny, demo):
    tokenizer, encoder = tiny
    split = tokenize(tokenizer, demo.train[:20], demo.label_of)
    lengths = split.lengths
    batch = split.batch([0, 5, 7])
    assert batch["input_ids"].shape == (3, int(lengths[[0, 5, 7]].max()))
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


def test_cached_frozen_layers_give_the_logits_of_the_full_model(tiny, demo):
    from cml.encoder import frozen_states

    tokenizer, full = tiny
    split = tokenize(tokenizer, demo.test[:40], demo.label_of)
    frozen = RelationEncoder(full.backbone, frozen_layers=1)
    split.hidden = frozen_states(frozen, split, tokenizer.pad_token_id)
    batch = split.batch(list(range(0, 40, 3)))
    cached = frozen.eval()(**batch)
    uncached = frozen(**{k: v for k, v in batch.items() if k != "hidden"})
    reference = full.eval()(**batch)  # Hugging Face's own forward of the whole model
    torch.testing.assert_close(uncached, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cached, reference, atol=2e-2, rtol=1e-2)  # fp16 storage
    assert all(not p.requires_grad for p in full.backbone.embeddings.parameters())
    assert all(p.requires_grad for p in full.backbone.encoder.layer[1].parameters())
    frozen.train()
    assert not full.backbone.embeddings.training and full.backbone.encoder.layer[1].training
    full.backbone.requires_grad_(True)
