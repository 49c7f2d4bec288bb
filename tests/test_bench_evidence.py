"""Choose on dev, report on test: the benchmarks' verdicts and choices read dev figures only.

Each test builds a small results structure in which dev and test disagree (dev says one arm or
point is better, test the other) and checks that the bench script's verdict or choice follows
dev; results written before dev was recorded give no verdict rather than a test one. Nothing is
trained: the functions run on made-up figures.
"""
from __future__ import annotations

from typing import Any

import pytest

from bench import augment_study, augment_study_findings, distill, equal_terms, tune
from bench.common import ngram_method

CORPUS, FRACTION = augment_study_findings.EVERY_ARM
ARMS = ("baseline", "student", "student_no_kd", "student_no_aug", "aug-synonyms", "aug-teacher-sample",
        "aug_random", "aug_unfiltered")


def per_seed(dev: float, test: float, spread: float = 0.002) -> list[dict[str, Any]]:
    """Three seeds around (dev, test), the same small spread on both splits."""
    return [{"seed": i, "dev_bits_per_char": dev + (i - 1) * spread, "test_bits_per_char": test + (i - 1) * spread,
             "best_step": 100, "steps": 100} for i in range(3)]


def fake_report(figures: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """An `lm.distill` report.json with each arm's (dev, test) bits per character."""
    models = {a: {"dev_bits_per_char": d, "test_bits_per_char": t, "per_seed": per_seed(d, t)}
              for a, (d, t) in figures.items()}
    return {"models": models}


def study_results() -> dict[str, Any]:
    """Dev says: synonyms and teacher samples alone help, the judge's filter beats a random one and
    none, KD + augmentation beats KD. Test says the opposite of each."""
    figures = {"baseline": (2.00, 2.00), "student": (1.90, 2.10), "student_no_kd": (1.80, 2.20),
               "student_no_aug": (1.95, 2.00), "aug-synonyms": (1.90, 2.20), "aug-teacher-sample": (1.90, 2.20),
               "aug_random": (1.95, 2.00), "aug_unfiltered": (1.95, 2.00)}
    rows = augment_study.rows_of(CORPUS, FRACTION, fake_report(figures))
    run = {"corpus": CORPUS, "fraction": FRACTION, "train_records": 10, "train_chars": 1000, "dropout": 0.1,
           "ngram": {"order": 3, "test_bits_per_char": 2.4, "method": "modified-kneser-ney"}, "teacher": None,
           "augmenters": {"synonyms": {"variants": 10, "kept": 9, "dropped": None}}}
    return {"runs": [run], "rows": rows}


def setting(f: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in f["per_setting"] if (s["corpus"], s["fraction"]) == (CORPUS, FRACTION))


def test_study_verdicts_follow_dev_not_test() -> None:
    f = augment_study_findings.findings(study_results())
    s = setting(f)
    assert s["decided_on"] == "dev"
    assert s["dev"]["ratio"]["aug-synonyms"]["verdict"] == "helps"   # test would say "hurts"
    assert s["dev"]["ratio"]["student_no_kd"]["verdict"] == "helps"
    assert s["aims"] == {"aug_at_most_0.97": True, "kd_aug_below_kd": True}
    assert s["dev"]["judged_minus_random"]["ci95"][1] < 0 and s["test"]["judged_minus_random"]["ci95"][0] > 0


def test_study_defaults_follow_dev_not_test() -> None:
    d = augment_study_findings.findings(study_results())["defaults"]
    assert d["read_on"] == "dev"
    # on test every default would be backed (filter loses, synonyms and teacher samples hurt)
    assert d["keep_quantile_1"] == "contradicts"
    assert d["no_synonyms"] == "contradicts"
    assert d["no_own_teacher_samples"] == "contradicts"


def test_study_best_filtering_is_chosen_on_dev() -> None:
    line = augment_study_findings.aim_lines(augment_study_findings.findings(study_results()))[0]
    assert f"the best filtering on dev: {augment_study_findings.LABELS['student_no_kd']}" in line


def test_study_readme_draws_verdicts_from_dev() -> None:
    text = augment_study_findings.readme_section(study_results() | {"machine": {"cpu_count": 2, "cpu": "test"}})
    assert "**dev contradicts it**" in text
    assert "+ synonyms alone 0.9500" in text and "(helps)" in text
    test_line = next(x for x in text.splitlines() if x.startswith("  On test (display only"))
    assert "helps" not in test_line and "hurts" not in test_line


def test_study_without_dev_gives_no_verdict() -> None:
    """Results written before dev was recorded (test alone, at the top level of each row): no
    verdict, aim or default is read from test instead."""
    res = study_results()
    for r in res["rows"]:
        test = r.pop("test")
        r.pop("dev")
        r.update(test)
    f = augment_study_findings.findings(res)
    s = setting(f)
    assert all(v is None for v in s["dev"]["ratio"].values())
    assert s["test"]["ratio"]["aug-synonyms"]["verdict"] == "hurts"  # shown, not used
    assert s["aims"] == {"aug_at_most_0.97": None, "kd_aug_below_kd": None}
    assert {f["defaults"][k] for k in ("keep_quantile_1", "no_synonyms", "no_own_teacher_samples")} == {"no dev figure"}


def tune_results() -> dict[str, Any]:
    """Point 1 is best on dev for both arms, point 2 on test."""
    def arms(dev: float, test: float) -> dict[str, Any]:
        return {a: {"dev_bits_per_char": dev, "test_bits_per_char": test, "best_step": 10} for a in tune.ARMS}
    return {"points": [{"lr": 1e-3, "dropout": 0.0, "teacher_logits": "x", "arms": arms(2.0, 2.5)},
                       {"lr": 2e-3, "dropout": 0.0, "teacher_logits": "x", "arms": arms(2.1, 2.2)}],
            "machine": {"cpu_count": 2, "cpu": "test"}, "load_avg_1m": [0, 0], "teacher": "t",
            "demo": {"lr": 2e-3, "dropout": 0.0}, "chosen": {}}


def test_tune_chooses_on_dev() -> None:
    chosen = tune.choose(tune_results()["points"])
    assert all(chosen[a]["lr"] == 1e-3 for a in tune.ARMS)


def test_tune_readme_marks_the_dev_choice() -> None:
    text = tune.readme_section(tune_results())
    assert "| 0.001 | 0 | 2.0000 (chosen) | 2.5000 |" in text


@pytest.mark.parametrize("ours, theirs, says", [(None, "v1", "Stale until rerun"), ("v0", "v1", "**Stale**"),
                                                ("v1", "v1", "current")])
def test_tune_says_when_it_is_stale(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, ours: str | None,
                                    theirs: str, says: str) -> None:
    path = tmp_path / "distill.json"
    path.write_text('{"runs": {"gl-ctg": {"report": {"version": "%s"}}}}' % theirs)
    monkeypatch.setattr(tune, "DISTILL_RESULTS", path)
    res = tune_results()
    for p in res["points"]:
        p["corpus_version"] = ours
    assert says in tune.staleness(res)


def test_equal_terms_picks_on_dev() -> None:
    rows = {"a": {"dev_bits_per_char": 2.0, "test_bits_per_char": 2.5},
            "b": {"dev_bits_per_char": 2.1, "test_bits_per_char": 2.2}}
    assert equal_terms.pick(rows) == "a"


def test_distill_makes_no_check_against_nanogpts_published_figure() -> None:
    """Our sliding windows on our split are not nanoGPT's block estimator on its split."""
    def model(test: float) -> dict[str, Any]:
        return {"params": 700_000, "test_bits_per_char": test, "test_nats_per_char": test * 0.693}
    run = {"wall_s": 1.0, "report": {"models": {k: model(2.0) for k in ("student", "baseline", "teacher", "ngram")},
                                      "paired": {"student_vs_baseline": {"seeds": 3, "ci95": [-0.1, -0.01]}}}}
    checks = distill.checks({"tinyshakespeare": run, "gl-ctg": run})
    assert not any("1.88" in k or "nanogpt" in k.lower() for c in checks.values() for k in c)


def test_ngram_method_is_read_from_the_results() -> None:
    assert ngram_method({"method": "modified-kneser-ney", "order": 7}) == "interpolated modified Kneser-Ney"
    assert ngram_method({"order": 5}) == "Witten-Bell (recorded before the change)"
