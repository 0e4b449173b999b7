"""The learner's loss terms as pure functions of tensors (docs/method.md, section "Losses").

Each is tested against a hand computation on tiny tensors. Which term a stage uses and with what
weight is declared by the method (`cml/methods.py`) and the `loss:` config section; the wiring from
a batch to these arguments lives in `cml/stages.py`.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def with_margins(logits: torch.Tensor, labels: torch.Tensor, margins: torch.Tensor | None) -> torch.Tensor:
    """`logits` with the pair margin `margins[y, r]` ([R, R], zero on the diagonal) added to every
    wrong relation r of an item of relation y: the item must then beat r by that margin."""
    return logits.float() if margins is None else logits.float() + margins[labels]


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, margins: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy over the relations seen so far (the others are masked in `logits`), with
    optional pair margins (`with_margins`)."""
    return F.cross_entropy(with_margins(logits, labels, margins), labels)


def bank_contrastive(
    z: torch.Tensor, labels: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, tau: float
) -> torch.Tensor:
    """CRL's supervised contrastive loss against a bank of detached features:

        L = mean_i -1/|P_i| sum_{a in P_i} log( exp(z_i.b_a / tau) / sum_{a'} exp(z_i.b_a' / tau) )

    with P_i the bank entries of z_i's relation. Anchors with no positive in the bank are left out.
    """
    log_prob = (z.float() @ bank.float().T / tau).log_softmax(-1)
    positive = (labels[:, None] == bank_labels[None, :]).float()
    count = positive.sum(1)
    has = count > 0
    if not has.any():
        return z.sum() * 0.0
    return (-(log_prob * positive).sum(1)[has] / count[has]).mean()


def masked_similarity(z: torch.Tensor, prototypes: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """z . p_r for every relation r, -inf for the relations not seen."""
    sim = z.float() @ prototypes.float().T
    return sim.masked_fill(~seen, -torch.inf)


def prototype_contrastive(
    z: torch.Tensor,
    labels: torch.Tensor,
    prototypes: torch.Tensor,
    seen: torch.Tensor,
    tau: float,
    margins: torch.Tensor | None = None,
) -> torch.Tensor:
    """CEAR's InfoNCE against the prototypes of the seen relations: -log softmax_r(z.p_r / tau)[y],
    with optional pair margins on the scores z.p_r / tau (`with_margins`)."""
    return cross_entropy(masked_similarity(z, prototypes, seen) / tau, labels, margins)


def hard_margin(
    z: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor, seen: torch.Tensor, margin: float
) -> torch.Tensor:
    """CEAR's margin against the hardest wrong prototype: mean max(0, margin - z.p_y + max_{r != y} z.p_r)."""
    sim = masked_similarity(z, prototypes, seen)
    positive = sim.gather(1, labels[:, None]).squeeze(1)
    negative = sim.scatter(1, labels[:, None], -torch.inf).amax(1)
    return F.relu(margin - positive + negative).mean()


def relational_distillation(
    z: torch.Tensor,
    labels: torch.Tensor,
    old: torch.Tensor,
    previous_prototypes: torch.Tensor,
    bank_centroids: torch.Tensor,
    kappa: float,
) -> torch.Tensor:
    """CRL's memory knowledge distillation: keep the geometry between old relations. No teacher pass.

    For each item whose relation y is old (`old`: the old relation ids, [O]),
        teacher t = softmax_j(kappa cos(pbar_y, pbar_j)) over old j  (`previous_prototypes` [O, H],
                    the previous task's prototypes),
        student s = log_softmax_j(kappa z . c_j)  (`bank_centroids` [O, Z], normalised bank means),
    and L = mean KL(t || s). Items of new relations do not count.
    """
    position = torch.full((int(max(labels.max(), old.max())) + 1,), -1, dtype=torch.long, device=labels.device)
    position[old] = torch.arange(len(old), device=labels.device)
    mine = position[labels]
    keep = mine >= 0
    if not keep.any():
        return z.sum() * 0.0
    p = F.normalize(previous_prototypes.float(), dim=-1)
    teacher = (kappa * p[mine[keep]] @ p.T).softmax(-1)
    student = (kappa * z[keep].float() @ F.normalize(bank_centroids.float(), dim=-1).T).log_softmax(-1)
    return F.kl_div(student, teacher, reduction="batchmean")


def focal_distillation(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    analogy_logits: torch.Tensor,
    true_probability: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """CEAR's focal knowledge distillation over the old relations (the columns of every logits
    argument), written as an analogy-weighted KL divergence:

        L = mean_i f_i sum_j s_ij q_ij (log q_ij - log p_ij),
        p = softmax(student), q = softmax(teacher), s = softmax(analogy), f = (1 - P(y_i | x_i))^gamma.

    CEAR writes it as the cross-entropy -sum_j q_ij s_ij log p_ij; the two differ by
    sum_j s_ij q_ij log q_ij, which does not depend on the student, so the gradients are the same,
    and this form is zero when student and teacher agree. q, s and f carry no gradient; the weights
    q * s are not renormalised, so relations analogous to the item's weigh more.
    """
    with torch.no_grad():
        log_q = teacher_logits.float().log_softmax(-1)
        weight = log_q.exp() * analogy_logits.float().softmax(-1)
        focal = (1 - true_probability.float()).clamp(min=0) ** gamma
    per_item = (weight * (log_q - student_logits.float().log_softmax(-1))).sum(-1)
    return (focal * per_item).mean()
