"""Seeds as evidence: per-arm mean and standard deviation over seeds, and paired differences.

Seed pair i trains every arm from the same initial parameters on the same order of real text
(`lm.distill.rounds`), so the difference of two arms is measured pair by pair; its mean, with a
95% Student t-interval over the pairs, says whether one arm beats the other beyond what a new
draw of the seed would change.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats


def spread(values: Sequence[float]) -> dict[str, float | int | None]:
    """{"mean", "sd" (sample, n - 1; None for one value), "n"}."""
    x = np.asarray(values, np.float64)
    return {"mean": round(float(x.mean()), 6), "sd": round(float(x.std(ddof=1)), 6) if len(x) > 1 else None,
            "n": int(len(x))}


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict[str, object]:
    """a - b pair by pair: {"seeds", "mean", "sd", "ci95": [lo, hi] (None under two pairs),
    "differences"}. The interval is mean +- t(1 - (1 - level) / 2, n - 1) x sd / sqrt(n)."""
    if len(a) != len(b) or not len(a):
        raise ValueError(f"paired values need equal, non-zero lengths ({len(a)} and {len(b)})")
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    n, mean = len(d), float(d.mean())
    ci = None
    if n > 1:
        half = float(stats.t.ppf(1 - (1 - level) / 2, n - 1)) * float(d.std(ddof=1)) / math.sqrt(n)
        ci = [round(mean - half, 6), round(mean + half, 6)]
    return {"seeds": n, "mean": round(mean, 6), "sd": round(float(d.std(ddof=1)), 6) if n > 1 else None,
            "ci95": ci, "differences": [round(float(x), 6) for x in d]}


def sentence(name: str, p: dict[str, object], unit: str = "bits/char") -> str:
    """One line: "student - baseline: -0.123 bits/char, 95% CI [-0.150, -0.096], 3 seeds"."""
    a, b = name.split("_vs_")
    ci = p["ci95"]
    where = f"95% CI [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "no interval (one seed)"
    return f"{a} - {b}: {p['mean']:+.3f} {unit}, {where}, {p['seeds']} seed{'s' if p['seeds'] != 1 else ''}"


def ratio_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict[str, object]:
    """a / b pair by pair: {"seeds", "mean" (of the ratios), "ci95"} (a t-interval, as above)."""
    ratios = np.asarray(a, np.float64) / np.asarray(b, np.float64)
    d = paired_difference(ratios, np.ones_like(ratios), level)
    return {"seeds": d["seeds"], "mean": round(1.0 + d["mean"], 6),
            "ci95": [round(1.0 + x, 6) for x in d["ci95"]] if d["ci95"] else None}


def effect(p: dict[str, object]) -> str:
    """What a paired difference (lower is better) says: helped, hurt, or not decided."""
    ci = p["ci95"]
    if not ci:
        return "one seed, not decided"
    return "it helped" if ci[1] < 0 else "it hurt" if ci[0] > 0 else "the interval includes 0, not decided"


def attribution(paired: dict[str, dict[str, object]], student_pools: Sequence[str] | None) -> list[str]:
    """Sentences saying what earned the student's difference from the baseline: distillation
    (student - student_no_kd: the same text without the teacher) and augmentation (student -
    student_no_aug: the same teacher without augmented text) and the n-gram mixed into the teacher
    (student - student_no_ngram: the teacher alone), each with its interval, as far as
    the arms trained allow. `student_pools`: the augmented pools the student read ([] when the
    dev-gain screen dropped every augmenter; None when not recorded)."""
    lines = []
    if student_pools is not None and not student_pools:
        lines.append("The dev-gain screen dropped every augmenter: the student trained on real text only, so "
                     "its difference from the baseline is distillation alone.")
    named = {"student_vs_student_no_kd": "distillation", "student_vs_student_no_aug": "augmentation",
             "student_vs_student_no_ngram": "the n-gram in the teacher"}
    for key, what in named.items():
        if key in paired:
            lines.append(f"What {what} earned: {sentence(key, paired[key])}: {effect(paired[key])}.")
    if student_pools and not any(k in paired for k in named):
        lines.append("Which of distillation and augmentation earned the student's gain is not measured in "
                     "this run (`--ablations` trains the arms that split it).")
    return lines
