"""Every method, declared in one place as a composition of parts: its stages (with their data,
batch order and loss terms), its memory, its test-time classifier and its plugins (meta step,
classifier reset). `METHODS` maps a `--method` name to its declaration; docs/method.md and the
README say where each comes from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cml.config import LossConfig
from cml.errors import CMLInputError
from cml.plugins import MetaStep, Plugin, ResetClassifier, RestoreOldRows
from cml.prototypes import NearestPrototype
from cml.stages import RefreshPrototypes, SelectMemory, Stage, Train

if TYPE_CHECKING:
    from cml.engine import MethodContext


@dataclass(frozen=True)
class Method:
    summary: str
    stages: tuple[Stage, ...]
    classifier: str = "linear"  # linear, ncm or ensemble; `train.classifier` overrides it for every method
    ncm: NearestPrototype = NearestPrototype("h", "cosine")  # the prototype side of ncm and ensemble
    beta: float | None = None  # prototype mix; None: `train.beta`
    plugins: tuple[Plugin, ...] = ()

    @property
    def has_memory(self) -> bool:
        return any(isinstance(s, SelectMemory) for s in self.stages)

    def reverses(self, relations: list[str], context: MethodContext) -> bool:
        """Whether a stage gives some of `relations` a reversed class (the run then makes the
        reversed training sentences once, for every order)."""
        return any(isinstance(s, Train) and s.reversed_relations(relations, context) for s in self.stages)

    @property
    def needs_start(self) -> bool:
        """Whether a part reads the weights from the start of the task (teacher, meta step)."""
        return any(isinstance(s, Train) and s.needs_teacher for s in self.stages) or any(
            p.needs_start for p in self.plugins
        )


LEARN = Train("learn", "task")
SELECT, REFRESH = SelectMemory(), RefreshPrototypes()
# CEAR's second stage: cross-entropy, prototype InfoNCE, hard-negative margin, focal distillation
# of the linear head and of the prototype scores, on the augmented memory of every seen relation.
CEAR_LOSSES = ("ce", "proto", "margin", "fkd", "fkd_z")


def consolidate(losses: tuple[str, ...], **options) -> Train:
    """The second stage: the memory of every seen relation, from the second task on."""
    return Train("consolidate", "memory", losses, epochs_option="consolidate_epochs", first_task=1, **options)


# Reptile step sizes. cml-2021 keeps the published 0.5. On the strong core, any step below 1 undoes
# part of what the learn stage gained and the consolidation stage has to win it back: on FewRel's
# validation split (order 0) 0.5 cost 1.7 points of final accuracy and 0.8 or 0.9 cost 0.7
# (README, "What was tried").
CML_2021_EPS, CML_EPS = 0.5, 0.9
MER_BATCHES = 2  # sub-batches of the interference meta step
TYPE_MARGIN = 1.0  # scale of the consolidation's type margins
# Reversed classes in cml's learn stage for every relation that is not symmetric (similarity 0:
# whatever its types). On FewRel's validation split (orders 0-1) this gave 74.0 / 73.8 against
# cml's 71.0 / 70.5 without them; the type-targeted choice, the relations at least 0.85-similar to
# their own reversal (21 of the 80: child, follows, tributary...; about as similar as a relation is
# to its nearest neighbour, median 0.84), gave 71.9 / 71.9 / 71.3 on orders 0-2 (README, "What was
# tried").
REVERSE_SIMILARITY = 0.0

# cml's parts, whether the method named `cml` has each, and what the part does. A part cml has gets
# the ablation `cml-no-PART`; a part it leaves out, the variant `cml+PART` that adds it. Chosen on
# FewRel's validation split, full data, orders 0-2 (README, "What was tried"): drift compensation
# was the one new part that did not cost accuracy (+0.2 over the three orders, p 0.32); memory by
# difficulty (-0.4, order 0), threat-weighted replay (-0.7, orders 0-1) and the MER step (-0.4,
# order 0) did, and all four together cost 1.1. Added to that cml: type margins -0.4 (m 1,
# order 0), the threatened memory in the learn stage -0.3 (8 relations, orders 0-2, p 0.65); added
# to today's cml (with the reversed classes), hybrid classes of the most type-similar pairs -0.8
# (orders 0-1: -0.1, -1.4), the learn stage's softmax over the task's classes -0.45 (orders
# 0-1: -0.2, -0.7), the directions rehearsed on the memory -1.1 (order 0) and CDec's restored old
# classifier rows -0.25 (orders 0-1: -0.3, -0.2).
CML_PARTS: dict[str, tuple[bool, str]] = {
    "curriculum": (True, "consolidation batches released easy to hard by the curriculum"),
    "meta": (True, "the Reptile step after the learn stage"),
    "drift": (True, "drift-compensated static prototypes"),
    "allocation": (False, "memory shared out by difficulty"),
    "threat": (False, "threat-weighted replay"),
    "interference": (False, "first-order MER consolidation steps"),
    "margins": (False, "type-similarity margins in the consolidation"),
    "focus": (False, "the memory of the old relations the task threatens most in the learn stage"),
    "reversed": (True, "reversed classes in the learn stage"),
    "hybrid": (False, "hybrid classes of the most type-similar pairs in the learn stage"),
    "asymmetric": (False, "a learn-stage softmax over the task's own classes (ER-ACE's asymmetric cross-entropy)"),
    "directions": (False, "a cross-entropy stage on the memory and its reversed sentences before the consolidation"),
    "restore": (False, "the old relations' classifier rows restored after the learn stage (CDec)"),
}


def cml(summary: str, **parts: bool) -> Method:
    """CML on the strong core: CEAR's two stages with CML's type-distribution difficulty put where
    forgetting happens (docs/method.md, "Difficulty against forgetting"). `parts` switches the
    parts of `CML_PARTS` from their choice for `cml`."""
    has = {name: parts.get(name, chosen) for name, (chosen, _) in CML_PARTS.items()}
    return Method(
        summary,
        (
            Train("learn", "task+threatened")
            if has["focus"]
            else Train(
                "learn",
                "task",
                reverse=REVERSE_SIMILARITY if has["reversed"] else None,
                hybrid="analogous" if has["hybrid"] else "none",
                softmax="task" if has["asymmetric"] else "seen",
            ),
            SelectMemory(allocation="difficulty" if has["allocation"] else "uniform"),
            *((Train("directions", "memory", first_task=1, reverse=REVERSE_SIMILARITY),) if has["directions"] else ()),
            consolidate(
                CEAR_LOSSES,
                augment=True,
                order="curriculum" if has["curriculum"] else "shuffle",
                replay="threat" if has["threat"] else "uniform",
                meta_batches=MER_BATCHES if has["interference"] else 1,
                type_margin=TYPE_MARGIN if has["margins"] else 0.0,
            ),
            RefreshPrototypes(drift="compensated" if has["drift"] else "fixed"),
        ),
        classifier="ensemble",
        ncm=NearestPrototype("z", "cosine"),
        plugins=tuple(
            part for part, on in ((MetaStep(CML_EPS), has["meta"]), (RestoreOldRows(), has["restore"])) if on
        ),
    )


def cml_variants() -> dict[str, Method]:
    """`cml` and, per part, the method that differs from it by that part alone."""
    parts = ", ".join(what for chosen, what in CML_PARTS.values() if chosen)
    out = {"cml": cml(f"CML on the strong core: CEAR's stages with {parts}")}
    for name, (chosen, what) in CML_PARTS.items():
        key = f"cml-no-{name}" if chosen else f"cml+{name}"
        out[key] = cml(f"cml {'without' if chosen else 'with'} {what}", **{name: not chosen})
    return out


METHODS: dict[str, Method] = {
    "finetune": Method("the current task alone, no memory: the lower bound", (LEARN,)),
    "joint": Method("all training data of every relation seen so far: the upper bound", (Train("learn", "seen"),)),
    "replay": Method(
        "one stage on the task and the K-means memory mixed (plain replay)",
        (Train("learn", "task+memory"), SELECT, REFRESH),
    ),
    "crl": Method(
        "CRL (Zhao et al. 2022): contrastive learning against a feature bank, then contrastive replay "
        "with relational distillation; memory re-selected; nearest memory mean in h",
        (
            Train("learn", "task", ("supcon",), sample_bank=True),
            SELECT,
            consolidate(("supcon", "rkd")),
            SelectMemory(first_task=1),
            REFRESH,
        ),
        classifier="ncm",
        ncm=NearestPrototype("h", "euclidean"),
        beta=1.0,
    ),
    "cear": Method(
        "CEAR (Zhao et al. 2023): cross-entropy on the task, then replay of the augmented memory with "
        "prototype contrast, margin and focal distillation; linear + prototype ensemble",
        (LEARN, SELECT, consolidate(CEAR_LOSSES, augment=True), REFRESH),
        classifier="ensemble",
        ncm=NearestPrototype("z", "cosine"),
        plugins=(ResetClassifier(),),
    ),
    **cml_variants(),
    "cml-2021": Method(
        "CML as published (Wu et al. 2021): curriculum-ordered memory inside the task's batches, Reptile after",
        (Train("learn", "task+memory", order="curriculum-mix"), SELECT, REFRESH),
        plugins=(MetaStep(CML_2021_EPS),),
    ),
}


def check_methods(names: list[str]) -> None:
    if not names:
        raise CMLInputError("no method given: use --method with one or more of " + ", ".join(METHODS))
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise CMLInputError(f"unknown method {unknown[0]!r}: use one of {', '.join(METHODS)}")


def check_classifier(names: list[str], classifier: str) -> None:
    """A classifier other than `linear` needs prototypes, so memory."""
    if classifier in ("ncm", "ensemble"):
        without = [n for n in names if not METHODS[n].has_memory]
        if without:
            raise CMLInputError(f"--classifier {classifier} needs prototypes, but {without[0]} keeps no memory")


def check_losses(names: list[str], loss: LossConfig) -> None:
    """Every training stage keeps at least one loss term with a non-zero weight."""
    for name in names:
        for stage in METHODS[name].stages:
            if isinstance(stage, Train):
                stage.weights(loss)


def check_learn_softmax(names: list[str], softmax: str | None) -> None:
    """`--learn-softmax task` sets the softmax of a learn stage's cross-entropy on the task: a method
    without such a stage would ignore it."""
    if softmax == "task":
        learns = lambda n: any(
            isinstance(s, Train) and s.data == "task" and "ce" in s.losses for s in METHODS[n].stages
        )
        without = [n for n in names if not learns(n)]
        if without:
            raise CMLInputError(
                f"--learn-softmax task: {without[0]} has no cross-entropy in a learn stage on the task alone"
            )


def check_difficulty(names: list[str], difficulty: str) -> None:
    """Prototype difficulty compares with the current task's prototypes, which exist only once its
    memory is selected: a curriculum inside the learn stage (cml-2021) runs before that."""
    if difficulty == "prototypes":
        early = [
            n for n in names if any(isinstance(s, Train) and s.order == "curriculum-mix" for s in METHODS[n].stages)
        ]
        if early:
            raise CMLInputError(
                f"--difficulty prototypes: {early[0]} orders memory inside the learn stage, before the "
                "current task has prototypes; use --difficulty types"
            )
