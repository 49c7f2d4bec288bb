"""Seed statistics of the distillation report: the paired difference and its t-interval."""
from __future__ import annotations

import pytest

from lm.distill.paired import paired_difference, sentence, spread


def test_paired_difference_and_its_95_percent_t_interval() -> None:
    student, baseline = [1.90, 1.95, 1.88], [2.00, 2.02, 1.99]
    p = paired_difference(student, baseline)
    # differences -0.10, -0.07, -0.11: mean -0.093333, sd 0.020817, t(0.975, 2) = 4.302653
    assert p["seeds"] == 3 and p["mean"] == pytest.approx(-0.093333, abs=1e-6)
    assert p["sd"] == pytest.approx(0.020817, abs=1e-6)
    half = 4.302653 * 0.0208167 / 3 ** 0.5
    assert p["ci95"] == pytest.approx([-0.093333 - half, -0.093333 + half], abs=1e-5)
    assert p["differences"] == pytest.approx([-0.10, -0.07, -0.11])
    assert sentence("student_vs_baseline", p) == "student - baseline: -0.093 bits/char, 95% CI [-0.145, -0.042], 3 seeds"
    # pairing matters: the same values unpaired would overlap
    assert p["ci95"][1] < 0
    one = paired_difference([1.9], [2.0])
    assert one["ci95"] is None and "no interval" in sentence("student_vs_baseline", one)
    with pytest.raises(ValueError):
        paired_difference([1.0, 2.0], [1.0])
    assert spread([1.0, 2.0, 3.0]) == {"mean": 2.0, "sd": 1.0, "n": 3}
