"""The arms of a run: which text and which loss each compared model trains on.

Every arm trains the student's shape with the same steps, schedule and paired seeds; only the
data and the loss differ. `ARMS` is the one list of them: the command's help, `rounds` (which
trains no arm it lacks) and the report's rows and legend read it.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Callable

import numpy as np

from lm.data import Pool
from lm.losses import TAILS

from lm.distill.config import flag
from lm.distill.variants import TEACHER_SAMPLE


@dataclass(frozen=True)
class ArmInfo:
    name: str                 # its models are NAME-sI; an upper-case part stands for several (aug-NAME)
    kd: bool                  # learns from the teacher's soft targets
    data: str                 # what it trains on
    options: tuple[str, ...]  # the command flags that add it (none: always trained)
    about: str                # what it answers

    @property
    def loss(self) -> str:
        return "KD" if self.kd else "CE"


ARMS = (
    ArmInfo("student", True, "real + the kept augmented text (the augmenters that pass `Rounds.screen`)", (),
            "the distilled student"),
    ArmInfo("baseline", False, "real text", (), "the same shape, steps and seeds without teacher or augmentation"),
    ArmInfo("student_no_kd", False, "real + the kept augmented text, less the teacher's samples (its lesson)",
            ("ablations", "study_arms"), "augmentation without a teacher"),
    ArmInfo("student_no_aug", True, "real text (--teacher-hf: its samples, CE)", ("ablations", "study_arms"),
            "the teacher without augmentation; refused when the teacher may have seen augmented text"),
    ArmInfo("student_no_ngram", True, "as the student, learning the teacher alone (no n-gram mixed in)",
            ("ablations",), "what the n-gram in the teacher earns; trained only when one is mixed in"),
    ArmInfo("aug_random", False, "real + per augmenter a seeded random draw of its variants, as many as the "
            "judge kept", ("study_arms",), "does the judge beat chance at the same kept fraction?"),
    ArmInfo("aug_unfiltered", False, "real + every judged variant of the student's augmenters", ("study_arms",),
            "does judging pay at all?"),
    ArmInfo("aug-NAME", False, "real + augmenter NAME's kept variants alone (screened out or not)",
            ("study_arms",), "each augmenter on its own"),
    ArmInfo("student_TAIL", True, "as the student, with the other top-k tail (renorm or bucket)",
            ("compare_tail",), "what the tail of a top-k teacher costs"),
)
PLACES = {"NAME": None, "TAIL": TAILS}  # what an upper-case part of a name stands for (None: any name)
_NOTES = {"study_arms": " (bench/augment_study.py)", "compare_tail": " (TAIL: the top-k tail other than --tail)"}
ARM_OPTIONS = {  # flag -> its help
    o: "also train " + ", ".join(f"{a.name} ({a.loss})" for a in ARMS if o in a.options)
       + ", every seed" + _NOTES.get(o, "")
    for o in dict.fromkeys(o for a in ARMS for o in a.options)}


def arm_info(arm: str) -> ArmInfo:
    """The row of `ARMS` an arm's name belongs to (`aug-noise`: `aug-NAME`); a name it lacks raises."""
    exact = {a.name: a for a in ARMS}
    if arm in exact:
        return exact[arm]
    for a in ARMS:
        for place, values in PLACES.items():
            head = a.name.removesuffix(place)
            rest = arm[len(head):]
            if head != a.name and arm.startswith(head) and rest and (values is None or rest in values):
                return a
    raise KeyError(f"arm {arm!r} is not in lm.distill.arms.ARMS")


def trained(options: set[str]) -> list[ArmInfo]:
    """The arms trained with these flags."""
    return [a for a in ARMS if not a.options or set(a.options) & options]


def arms_epilog() -> str:
    """The arms as the command's help lists them."""
    width = max(len(a.name) for a in ARMS)
    rows = [textwrap.fill(f"  {a.name:<{width}}  {a.loss}  {a.data}; {a.about}"
                          + (f" ({' or '.join(flag(o) for o in a.options)})" if a.options else ""),
                          100, subsequent_indent=" " * (width + 8), break_on_hyphens=False) for a in ARMS]
    return "arms (loss, data; what it answers):\n" + "\n".join(rows)


@dataclass(frozen=True)
class Arm:
    rows: list[dict]                    # the augmented variants it trains on
    pools: list[Pool]                   # one per augmenter, built from `rows`
    weights: dict[str, float]           # mixture weights of the pools
    kd: bool
    tail: str | None = None             # the top-k tail, when it differs from the run's
    ngram: bool = True                  # KD from the teacher with the n-gram mixed in, when it is


def size_weights(pools: list[Pool]) -> dict[str, float]:
    """Mixture weights proportional to each pool's number of sequences."""
    total = sum(len(p) for p in pools) or 1.0
    return {p.name: round(float(len(p)) / total, 4) for p in pools}


def random_like(judged: list[dict], kept: list[dict], augmenters: list[str], seed: int) -> list[dict]:
    """Per augmenter, as many of its judged variants as the judge kept, drawn at random (seeded)."""
    out = []
    for k, name in enumerate(sorted(augmenters)):
        rows = [x for x in judged if x["augmenter"] == name]
        n = sum(1 for x in kept if x["augmenter"] == name)
        pick = np.sort(np.random.default_rng([seed, 41, k]).permutation(len(rows))[:n])
        out += [rows[i] for i in pick]
    return out


def study_arms(judged: list[dict], kept: list[dict], used: list[str], weights: dict[str, float],
               build: Callable[[list[dict]], list[Pool]], seed: int) -> dict[str, Arm]:
    """`aug_random`, `aug_unfiltered` and one `aug-NAME` per augmenter (see `ARMS`).
    `used`: the augmenters the student trains on; `weights`: its mixture."""
    plain = [a for a in used if a != TEACHER_SAMPLE]
    arms = {}
    rows = random_like(judged, kept, plain, seed)
    arms["aug_random"] = Arm(rows, build(rows), weights, False)
    rows = [x for x in judged if x["augmenter"] in plain]
    pools = build(rows)
    arms["aug_unfiltered"] = Arm(rows, pools, size_weights(pools), False)
    for name in sorted({x["augmenter"] for x in kept}):
        rows = [x for x in kept if x["augmenter"] == name]
        arms[f"aug-{name}"] = Arm(rows, build(rows), {name: 1.0}, False)
    return arms
