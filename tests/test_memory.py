import numpy as np

from cml.memory import select_prototypes


def nearest_to_blob_means(features, blobs):
    """Brute force, no K-means: on well-separated blobs K-means' centroids are the blob means, and
    memory keeps, for each, the real example nearest to it."""
    chosen = set()
    for members in blobs:
        mean = [sum(features[i][d] for i in members) / len(members) for d in range(len(features[0]))]
        best, best_d = None, float("inf")
        for i, x in enumerate(features):
            d = sum((a - b) ** 2 for a, b in zip(x, mean))
            if d < best_d:
                best, best_d = i, d
        chosen.add(best)
    return sorted(chosen)


def test_prototypes_are_the_examples_nearest_the_cluster_means_by_brute_force():
    rng = np.random.default_rng(0)
    for seed in range(3):
        centres = rng.normal(0, 10, size=(6, 5))
        order = rng.permutation(6 * 20)  # blobs interleaved, not in index order
        features = np.empty((120, 5))
        for j, c in enumerate(centres):
            features[order[j * 20 : (j + 1) * 20]] = c + rng.normal(0, 0.3, size=(20, 5))
        blobs = [order[j * 20 : (j + 1) * 20] for j in range(6)]
        picked = select_prototypes(features, 6, seed)
        assert picked.tolist() == nearest_to_blob_means(features.tolist(), blobs)


def test_small_relations_keep_everything_and_selection_is_seeded():
    rng = np.random.default_rng(1)
    assert select_prototypes(rng.normal(size=(4, 3)), 10, 0).tolist() == [0, 1, 2, 3]
    x = rng.normal(size=(50, 4))
    assert np.array_equal(select_prototypes(x, 5, 7), select_prototypes(x, 5, 7))
