import json

import numpy as np
import pytest
from scipy.stats import entropy

from cml.errors import CMLInputError
from cml.relations import (
    RelationSpace,
    build_space,
    dataset_types,
    induced_types,
    kg_types,
    relation_similarity,
    type_distributions,
)


def test_symmetrised_kl_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    p_h, p_t = rng.dirichlet(np.ones(5), size=4), rng.dirichlet(np.ones(5), size=4)
    sim, reversal = relation_similarity(p_h, p_t, "kl", tau=2.0)
    for a in range(4):
        for b in range(4):
            d = sum(entropy(p[a], p[b]) + entropy(p[b], p[a]) for p in (p_h, p_t))
            assert sim[a, b] == pytest.approx(np.exp(-d / 2.0), rel=1e-9)
        # the reversal: domain and range swapped, compared side by side with the relation itself
        d = entropy(p_h[a], p_t[a]) + entropy(p_t[a], p_h[a]) + entropy(p_t[a], p_h[a]) + entropy(p_h[a], p_t[a])
        assert reversal[a] == pytest.approx(np.exp(-d / 2.0), rel=1e-9)
    cos, cos_reversal = relation_similarity(p_h, p_t, "cosine")
    v, flipped = np.concatenate([p_h, p_t], 1), np.concatenate([p_t, p_h], 1)
    assert cos[1, 2] == pytest.approx(v[1] @ v[2] / np.linalg.norm(v[1]) / np.linalg.norm(v[2]))
    assert cos_reversal[3] == pytest.approx(v[3] @ flipped[3] / np.linalg.norm(v[3]) / np.linalg.norm(flipped[3]))


def test_reversal_similarity_is_one_where_domain_and_range_agree():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    _, reversal = relation_similarity(p, p[[0, 0]], "kl")  # relation 0: the same types on both sides
    assert reversal[0] == pytest.approx(1.0) and reversal[1] < 0.5


def test_demo_relations_sharing_types_are_nearest(demo):
    space = build_space(demo, dataset_types(demo))
    signature = {ex.relation: (ex.head_type, ex.tail_type) for ex in demo.train}
    for relation in ("born_in", "spouse", "capital_of", "published_in", "works_for"):
        same = {r for r, s in signature.items() if s == signature[relation] and r != relation}
        top = [r for r, _ in space.nearest(relation, k=len(same))]
        assert set(top) == same, (relation, top)
    # sharing one side (person -> city vs person -> country) is closer than sharing none
    assert (
        space.similarity[space.index["born_in"], space.index["citizen_of"]]
        > space.similarity[space.index["born_in"], space.index["official_language"]]
    )


def test_task_and_relation_difficulty_by_hand():
    sim = np.array([[1.0, 0.8, 0.1, 0.2], [0.8, 1.0, 0.3, 0.0], [0.1, 0.3, 1.0, 0.5], [0.2, 0.0, 0.5, 1.0]])
    space = RelationSpace(["a", "b", "c", "d"], np.zeros((4, 2)), sim)
    # S({a,b}, {c}) = (.1 + .3) / 2 = .2; S({a,b}, {d}) = (.2 + 0) / 2 = .1; S({c}, {d}) = .5
    assert space.task_difficulty([["a", "b"], ["c"], ["d"]]) == pytest.approx([0.15, 0.35, 0.3])
    assert space.relation_difficulty("a", ["b", "c"]) == pytest.approx(0.45)


def test_kg_type_map_spreads_mass_and_names_missing_entities(tmp_path, demo):
    ds = demo.cap_train(2)
    entities = {e for ex in ds.train for e in (ex.head_id, ex.tail_id)}
    type_map = {e: ["thing", e.split(":")[1]] for e in entities}
    path = tmp_path / "types.json"
    path.write_text(json.dumps(type_map))
    types = kg_types(ds, path)
    p_h, _ = type_distributions(ds, types, smoothing=0.0)
    names = sorted({t for h, t2 in types for t in h + t2})
    row = p_h[ds.label_of["born_in"]]
    assert row[names.index("thing")] == pytest.approx(0.5) and row[names.index("person")] == pytest.approx(0.5)
    del type_map[ds.train[3].tail_id]
    path.write_text(json.dumps(type_map))
    with pytest.raises(CMLInputError, match=r"types.json: no types for entity .* \(training example 3"):
        kg_types(ds, path)


def test_induced_types_cluster_mentions(tiny, demo):
    tokenizer, encoder = tiny
    ds = demo.cap_train(5)
    types = induced_types(ds, tokenizer, encoder.backbone, n_types=6, seed=0)
    assert len(types) == len(ds.train)
    assert len({t for h, tt in types for t in h + tt}) == 6
    by_mention = {}
    for ex, (h, t) in zip(ds.train, types):
        assert by_mention.setdefault(ex.head_text, h) == h and by_mention.setdefault(ex.tail_text, t) == t
