import numpy as np
from sklearn.cluster import KMeans

from cml.memory import select_prototypes


def brute_force(features, m, seed):
    centroids = KMeans(n_clusters=m, n_init=1, random_state=seed).fit(features).cluster_centers_
    chosen = set()
    for c in centroids:
        best, best_d = None, float("inf")
        for i, x in enumerate(features):
            d = sum((a - b) ** 2 for a, b in zip(x, c))
            if d < best_d:
                best, best_d = i, d
        chosen.add(best)
    return sorted(chosen)


def test_prototypes_match_a_brute_force_nearest_to_centroid_search():
    rng = np.random.default_rng(0)
    for seed in range(3):
        features = np.concatenate([rng.normal(loc, 0.3, size=(20, 5)) for loc in range(6)])
        picked = select_prototypes(features, 6, seed)
        assert picked.tolist() == brute_force(features, 6, seed)
        # well separated clusters: one prototype from each
        assert sorted({p // 20 for p in picked}) == list(range(6))


def test_small_relations_keep_everything_and_selection_is_seeded():
    rng = np.random.default_rng(1)
    assert select_prototypes(rng.normal(size=(4, 3)), 10, 0).tolist() == [0, 1, 2, 3]
    x = rng.normal(size=(50, 4))
    assert np.array_equal(select_prototypes(x, 5, 7), select_prototypes(x, 5, 7))
