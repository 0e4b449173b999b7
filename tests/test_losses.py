"""Every loss term against a hand computation (plain Python loops over tiny tensors)."""

import math

import pytest
import torch

from cml import losses


def near(value):
    """Within float32 rounding: the losses compute in float32 (bf16 features are upcast)."""
    return pytest.approx(value, rel=1e-5, abs=1e-7)


def unit(*rows):
    return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float64), dim=-1)


def log_softmax(values):
    top = max(values)
    total = math.log(sum(math.exp(v - top) for v in values)) + top
    return [v - total for v in values]


def softmax(values):
    return [math.exp(v) for v in log_softmax(values)]


def dot(a, b):
    return float(sum(float(x) * float(y) for x, y in zip(a, b)))


def test_cross_entropy_over_seen_relations():
    logits = torch.tensor([[2.0, 0.5, -1e9], [0.0, 1.0, -1e9]])  # relation 2 unseen (masked)
    labels = torch.tensor([0, 1])
    expected = -(log_softmax([2.0, 0.5])[0] + log_softmax([0.0, 1.0])[1]) / 2
    assert losses.cross_entropy(logits, labels).item() == near(expected)


def test_bank_contrastive_by_hand():
    z = unit([1.0, 0.0], [0.6, 0.8])
    labels = torch.tensor([0, 1])
    bank = unit([1.0, 0.1], [0.0, 1.0], [0.9, -0.3], [0.5, 0.5])
    bank_labels = torch.tensor([0, 1, 0, 2])
    tau = 0.1
    per = []
    for i in range(2):
        logp = log_softmax([dot(z[i], b) / tau for b in bank.tolist()])
        positives = [a for a in range(4) if bank_labels[a] == labels[i]]
        per.append(-sum(logp[a] for a in positives) / len(positives))
    got = losses.bank_contrastive(z, labels, bank, bank_labels, tau)
    assert got.item() == near(sum(per) / 2)


def test_bank_contrastive_leaves_out_anchors_without_positives():
    z = unit([1.0, 0.0], [0.0, 1.0])
    bank = unit([1.0, 0.2])
    only_first = losses.bank_contrastive(z, torch.tensor([0, 5]), bank, torch.tensor([0]), 0.1)
    assert only_first.item() == near(0.0)  # one bank entry: log softmax of a single logit
    none = losses.bank_contrastive(z, torch.tensor([4, 5]), bank, torch.tensor([0]), 0.1)
    assert none.item() == 0.0


def test_prototype_contrastive_and_margin_by_hand():
    z = unit([1.0, 0.2], [0.1, 1.0])
    prototypes = unit([1.0, 0.0], [0.0, 1.0], [0.7, 0.7])
    seen = torch.tensor([True, True, False])  # relation 2 not seen: neither a class nor a negative
    labels = torch.tensor([0, 1])
    tau, margin = 0.1, 0.1
    ce, hinge = [], []
    for i in range(2):
        sims = [dot(z[i], p) for p in prototypes.tolist()[:2]]
        ce.append(-log_softmax([s / tau for s in sims])[labels[i]])
        negative = max(s for r, s in enumerate(sims) if r != labels[i])
        hinge.append(max(0.0, margin - sims[labels[i]] + negative))
    assert losses.prototype_contrastive(z, labels, prototypes, seen, tau).item() == near(sum(ce) / 2)
    assert losses.hard_margin(z, labels, prototypes, seen, margin).item() == near(sum(hinge) / 2)


def test_pair_margins_by_hand():
    """With margins m[y, r], every wrong relation's score of an item of y is raised by m[y, r]."""
    logits = torch.tensor([[2.0, 0.5, 1.0, -1e9], [0.0, 1.0, 0.3, -1e9]])  # relation 3 unseen
    labels = torch.tensor([0, 2])
    margins = torch.tensor([[0.0, 0.4, 1.5, 0.2], [0.4, 0.0, 0.1, 0.3], [0.7, 0.9, 0.0, 2.0], [0.2, 0.3, 2.0, 0.0]])
    first = log_softmax([2.0, 0.5 + 0.4, 1.0 + 1.5])[0]
    second = log_softmax([0.0 + 0.7, 1.0 + 0.9, 0.3])[2]
    assert losses.cross_entropy(logits, labels, margins).item() == near(-(first + second) / 2)
    assert losses.cross_entropy(logits, labels, torch.zeros(4, 4)).item() == near(
        losses.cross_entropy(logits, labels).item()
    )
    z = unit([1.0, 0.2], [0.1, 1.0])
    prototypes = unit([1.0, 0.0], [0.0, 1.0], [0.7, 0.7])
    seen, tau = torch.tensor([True, True, False]), 0.1
    sims = [[dot(z[i], p) / tau for p in prototypes.tolist()[:2]] for i in range(2)]
    expected = -(log_softmax([sims[0][0], sims[0][1] + 0.4])[0] + log_softmax([sims[1][0] + 0.4, sims[1][1]])[1]) / 2
    got = losses.prototype_contrastive(z, torch.tensor([0, 1]), prototypes, seen, tau, margins[:3, :3])
    assert got.item() == near(expected)


def test_margin_is_zero_once_every_item_is_far_enough_from_its_hardest_negative():
    z = unit([1.0, 0.0], [0.0, 1.0])
    prototypes = unit([1.0, 0.0], [0.0, 1.0])
    assert losses.hard_margin(z, torch.tensor([0, 1]), prototypes, torch.tensor([True, True]), 0.5).item() == 0.0


def test_relational_distillation_by_hand():
    z = unit([1.0, 0.3], [0.2, 1.0], [0.5, 0.5])
    labels = torch.tensor([3, 1, 0])  # relation 0 is new this task: its item does not count
    old = torch.tensor([1, 3])
    previous = torch.tensor([[1.0, 0.0, 0.5], [0.2, 1.0, 0.0]], dtype=torch.float64)  # p_bar of 1 and 3
    centroids = torch.tensor([[2.0, 1.0], [-0.5, 1.0]], dtype=torch.float64)  # bank means of 1 and 3
    kappa = 10.0
    p = torch.nn.functional.normalize(previous, dim=-1).tolist()
    c = torch.nn.functional.normalize(centroids, dim=-1).tolist()
    row = {1: 0, 3: 1}
    kls = []
    for i in (0, 1):
        y = row[int(labels[i])]
        t = softmax([kappa * dot(p[y], p[j]) for j in range(2)])
        s = log_softmax([kappa * dot(z[i], c[j]) for j in range(2)])
        kls.append(sum(tj * (math.log(tj) - sj) for tj, sj in zip(t, s)))
    got = losses.relational_distillation(z, labels, old, previous, centroids, kappa)
    assert got.item() == near(sum(kls) / 2)


def test_focal_distillation_by_hand():
    student = torch.tensor([[1.0, 0.0, -1.0], [0.3, 0.2, 0.1]], dtype=torch.float64)
    teacher = torch.tensor([[2.0, 0.5, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    analogy = torch.tensor([[0.1, 0.9, 0.3], [1.0, 0.0, 0.5]], dtype=torch.float64)
    p_true = torch.tensor([0.7, 0.2], dtype=torch.float64)
    gamma = 1.25
    per = []
    for i in range(2):
        q, s = softmax(teacher[i].tolist()), softmax(analogy[i].tolist())
        logp = log_softmax(student[i].tolist())
        f = (1 - p_true[i].item()) ** gamma
        per.append(f * sum(sj * qj * (math.log(qj) - lp) for sj, qj, lp in zip(s, q, logp)))
    got = losses.focal_distillation(student, teacher, analogy, p_true, gamma)
    assert got.item() == near(sum(per) / 2)


def test_focal_distillation_is_zero_when_student_and_teacher_agree():
    logits = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    loss = losses.focal_distillation(logits, logits.detach(), torch.randn(5, 4), torch.rand(5), 2.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)


def test_focal_distillation_has_the_gradient_of_cears_form():
    """Same gradient as CEAR's written form, -sum_j (q_j s_j + 1e-8) log p_j, up to the 1e-8.
    Seeded: the 1e-8 term moves a gradient by up to 1e-8 x (4 p_k - 1) / 3 <= 1e-8, so a random
    draw near that edge can overstep the tolerance by rounding alone."""
    torch.manual_seed(0)
    student = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    teacher, analogy, p_true = torch.randn(3, 4), torch.randn(3, 4), torch.rand(3)
    losses.focal_distillation(student, teacher, analogy, p_true, 1.5).backward()
    ours = student.grad.clone()
    student.grad = None
    target = teacher.double().softmax(-1) * analogy.double().softmax(-1) + 1e-8
    focal = (1 - p_true.double()) ** 1.5
    (focal * -(target * student.log_softmax(-1)).sum(-1)).mean().backward()
    torch.testing.assert_close(ours, student.grad, atol=1e-8, rtol=0)
