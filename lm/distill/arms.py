"""The arms of a run: which text and which loss each compared model trains on.

Every arm trains the student's shape with the same steps, schedule and paired seeds; only the
data and the loss differ:

- `student`: KD + the kept augmented text (the augmenters that passed `Rounds.screen`);
- `baseline`: real text, cross-entropy;
- `--ablations`: `student_no_kd` (the kept augmented text without any teacher: the teacher's own
  samples are left out too, they are its lesson) and `student_no_aug` (real text, KD);
- `--study-arms` (bench/augment_study.py) adds, all cross-entropy without a teacher:
  `aug_random` (per augmenter, a seeded random subset of its variants as large as the judge's
  kept set: does the judge beat chance at the same kept fraction?), `aug_unfiltered` (every
  variant of those augmenters) and `aug-NAME` (real text plus augmenter NAME's kept variants
  alone, screened out or not, teacher samples included).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from lm.data import Pool

from lm.distill.variants import TEACHER_SAMPLE


@dataclass(frozen=True)
class Arm:
    rows: list[dict]                    # the augmented variants it trains on
    pools: list[Pool]                   # one per augmenter, built from `rows`
    weights: dict[str, float]           # mixture weights of the pools
    kd: bool
    tail: str | None = None             # the top-k tail, when it differs from the run's


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
    """`aug_random`, `aug_unfiltered` and one `aug-NAME` per augmenter (see the module's doc).
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
