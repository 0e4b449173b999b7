import torch

from cml.augment import augment
from cml.data.records import MARKERS
from cml.tokens import tokenize


def decode(tokenizer, split, i):
    return tokenizer.convert_ids_to_tokens(split.ids[split.offsets[i] : split.offsets[i + 1]].tolist())


def mention(words, start, end):
    return words[words.index(start) + 1 : words.index(end)]


def context(words):
    """The sentence with both mentions taken out (markers kept)."""
    inside, out = False, []
    for w in words:
        if w in ("[E12]", "[E22]"):
            inside = False
        if not inside:
            out.append(w)
        if w in ("[E11]", "[E21]"):
            inside = True
    return out


def test_augmented_memory_keeps_markers_labels_and_the_length_cap(tiny, demo):
    tokenizer, _ = tiny
    examples = [ex for r in demo.relations[:3] for ex in [e for e in demo.train if e.relation == r][:4]]
    split = tokenize(tokenizer, examples, demo.label_of)
    markers = tuple(tokenizer.convert_tokens_to_ids(list(MARKERS)))
    items = torch.arange(len(split))
    for kind, factor in (("none", 1), ("swap", 2), ("full", 4)):
        out = augment(split, items, kind, markers, max_length=40, generator=torch.Generator().manual_seed(0))
        n = len(items)
        assert len(out) == factor * n
        assert out.labels.tolist() == split.labels.tolist() * factor  # every copy keeps its sentence's label
        for i in range(len(out)):
            words = decode(tokenizer, out, i)
            assert words[0] == "[CLS]" and words[-1] == "[SEP]"
            assert all(words.count(m) == 1 for m in MARKERS)
            assert words[out.head_pos[i]] == "[E11]" and words[out.tail_pos[i]] == "[E21]"
            assert len(words) <= max(40, int(split.lengths[i % n]))  # joined sentences respect the cap
        for i in range(n):  # the originals come first, unchanged
            assert decode(tokenizer, out, i) == decode(tokenizer, split, i)
        if kind != "none":
            for i in range(n, 2 * n):  # a swapped copy: the context of i - n, the mentions of a same-relation partner
                words, original = decode(tokenizer, out, i), decode(tokenizer, split, i - n)
                partners = [j for j in range(n) if split.labels[j] == split.labels[i - n]]
                heads = [mention(decode(tokenizer, split, j), "[E11]", "[E12]") for j in partners]
                assert mention(words, "[E11]", "[E12]") in heads
                assert context(words) == context(original)


def test_concatenation_adds_a_sentence_of_another_relation_without_its_markers(tiny, demo):
    tokenizer, _ = tiny
    examples = [next(e for e in demo.train if e.relation == r) for r in demo.relations[:2]]
    split = tokenize(tokenizer, examples, demo.label_of)
    markers = tuple(tokenizer.convert_tokens_to_ids(list(MARKERS)))
    out = augment(split, torch.arange(2), "full", markers, max_length=512, generator=torch.Generator().manual_seed(1))
    for i in range(4, 8):
        source = decode(tokenizer, out, i - 4)
        words = decode(tokenizer, out, i)
        assert len(words) > len(source)
        if (i - 4) % 2 == 0:  # after the sentence
            assert words[: len(source) - 1] == source[:-1]
        else:  # before it
            assert words[-(len(source) - 1) :] == source[1:]
