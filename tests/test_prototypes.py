import math

import torch

from cml.model import Output
from cml.prototypes import NearestPrototype, Prototypes, class_means, predictions


def test_prototypes_mix_static_and_dynamic_means():
    protos = Prototypes.empty(4, {"h": 2, "z": 2})
    protos.set("static", torch.tensor([0, 1]), {"h": torch.tensor([[1.0, 0.0], [0.0, 2.0]]), "z": torch.eye(2)})
    protos.set("dynamic", torch.tensor([1, 2]), {"h": torch.tensor([[4.0, 0.0], [3.0, 3.0]]), "z": torch.eye(2)})
    h = protos.mixed("h", beta=0.25)
    torch.testing.assert_close(h[0], torch.tensor([1.0, 0.0]))  # static only
    torch.testing.assert_close(h[1], torch.tensor([0.75 * 0.0 + 0.25 * 4.0, 0.75 * 2.0 + 0.25 * 0.0]))
    torch.testing.assert_close(h[2], torch.tensor([3.0, 3.0]))  # dynamic only
    assert protos.covers(torch.tensor([0, 1, 2])) and not protos.covers(torch.tensor([3]))
    z = protos.mixed("z", beta=0.5)
    torch.testing.assert_close(z[1], torch.tensor([0.5, 0.5]) / math.sqrt(0.5))  # renormalised


def test_class_means():
    values = torch.tensor([[1.0, 1.0], [3.0, 1.0], [5.0, 5.0]])
    labels = torch.tensor([2, 2, 0])
    torch.testing.assert_close(
        class_means(values, labels, torch.tensor([0, 2])), torch.tensor([[5.0, 5.0], [2.0, 1.0]])
    )


def brute_force_nearest(x, prototypes, seen, metric):
    best = []
    for row in x.tolist():
        scores = {}
        for r, p in enumerate(prototypes.tolist()):
            if not seen[r]:
                continue
            if metric == "cosine":
                scores[r] = sum(a * b for a, b in zip(row, p)) / math.sqrt(
                    sum(a * a for a in row) * sum(b * b for b in p)
                )
            else:
                scores[r] = -sum((a - b) ** 2 for a, b in zip(row, p))
        best.append(max(scores, key=scores.get))
    return best


def test_nearest_prototype_matches_a_brute_force_search():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 5, generator=g)
    prototypes = torch.randn(6, 5, generator=g)
    seen = torch.tensor([True, True, False, True, True, False])
    out = Output(h=x, z=torch.nn.functional.normalize(x, dim=-1), logits=torch.zeros(40, 6))
    for space in ("h", "z"):
        for metric in ("cosine", "euclidean"):
            preds = predictions(out, seen, prototypes, NearestPrototype(space, metric), alpha=0.5, tau=0.1)["ncm"]
            assert preds.tolist() == brute_force_nearest(getattr(out, space), prototypes, seen.tolist(), metric)


def test_ensemble_by_hand_and_linear_only_without_prototypes():
    z = torch.nn.functional.normalize(torch.tensor([[1.0, 0.2], [0.0, 1.0]]), dim=-1)
    logits = torch.tensor([[0.0, 1.0, 9.0], [2.0, 0.0, 9.0]])  # relation 2 unseen: never predicted
    prototypes = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    seen = torch.tensor([True, True, False])
    out = Output(h=z, z=z, logits=logits)
    alpha, tau = 0.7, 0.1
    preds = predictions(out, seen, prototypes, NearestPrototype("z", "cosine"), alpha, tau)
    for i in range(2):
        lin = torch.softmax(logits[i, :2], 0)
        ncm = torch.softmax(torch.stack([z[i] @ prototypes[r] / prototypes[r].norm() for r in range(2)]) / tau, 0)
        assert preds["ensemble"][i] == int(torch.argmax(alpha * lin + (1 - alpha) * ncm))
    assert preds["linear"].tolist() == [1, 0]
    assert set(predictions(out, seen, None, NearestPrototype(), alpha, tau)) == {"linear"}
