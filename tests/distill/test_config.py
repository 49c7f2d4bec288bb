"""`lm.distill.config` and the parser `lm.distill.cli` builds from it: an option is one field of
`Settings`, presets only supply defaults, anything unknown or forgotten fails loudly, and a run's
settings are fixed when it is created (`RUN/distill.json`). Also the table of arms (`arms.ARMS`)
that the help, the loop and the report read."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from lm.distill import cli, config
from lm.distill.arms import ARM_OPTIONS, ARMS, arm_info, trained
from lm.distill.config import PRESETS, SHARE, Settings, check_presets, option, resolve_settings
from lm.distill.report import row_order
from lm.errors import UsageError

BASE = ["--corpus", "c", "--out", "o"]


def extended(fields: list[tuple]) -> type:
    return dataclasses.make_dataclass("Extended", fields, bases=(Settings,), frozen=True)


def test_a_new_field_is_a_new_option_with_its_default_from_each_preset(monkeypatch) -> None:
    """Guards "one option = one field": a field added to `Settings` (here by a subclass) is an
    option of the parser, with its help, type and the default of each preset (the field's own
    where a preset names none); given, it is a setting like the rest, stored and checked."""
    cls = extended([("warmup_share", float, option("share of steps spent warming up", 0.1, check=SHARE))])
    presets = {**PRESETS, "tiny": dataclasses.replace(PRESETS["tiny"], values={**PRESETS["tiny"].values,
                                                                               "warmup_share": 0.05}),
               "full": dataclasses.replace(PRESETS["full"], values={**PRESETS["full"].values, "warmup_share": 0.2})}
    check_presets(cls, presets)
    monkeypatch.setattr(config, "PRESETS", presets)
    monkeypatch.setattr(cli, "PRESETS", presets)
    parser = cli.build_parser(cls)
    help_text = " ".join(parser.format_help().split())
    assert ("--warmup-share WARMUP_SHARE share of steps spent warming up "
            "(default: tiny 0.05, demo 0.1, full 0.2, study 0.1)") in help_text
    assert cli.given_options(parser.parse_args(BASE), cls) == {}
    args = parser.parse_args(BASE + ["--warmup-share", "0.3", "--seeds", "4"])
    assert cli.given_options(args, cls) == {"warmup_share": 0.3, "seeds": 4}
    for name, want in {"tiny": 0.05, "demo": 0.1, "full": 0.2, "study": 0.1}.items():
        assert cls(corpus="c", preset=name).warmup_share == want
    s = cls(corpus="c", preset="demo", warmup_share=0.3)
    assert s.stored()["warmup_share"] == 0.3 and s.seeds == PRESETS["demo"].values["seeds"]
    with pytest.raises(UsageError, match="--warmup-share must be in"):
        cls(corpus="c", preset="demo", warmup_share=1.5).check()


def test_unknown_forgotten_or_unmarked_fields_fail_loudly() -> None:
    tiny = PRESETS["tiny"]
    with pytest.raises(TypeError, match="not settings a preset sets"):
        check_presets(Settings, {"x": dataclasses.replace(tiny, values={**tiny.values, "student_stepz": 3})})
    with pytest.raises(TypeError, match="no value for"):  # a field without a default must be in every preset
        check_presets(extended([("warmup_steps", int, option("warm-up steps"))]), PRESETS)
    with pytest.raises(TypeError, match="neither option, internal nor preset_only"):
        check_presets(extended([("forgotten", int, dataclasses.field(default=0))]), PRESETS)
    with pytest.raises(TypeError, match="corpus"):  # internal: not a preset's to set
        check_presets(Settings, {"x": dataclasses.replace(tiny, values={**tiny.values, "corpus": "c"})})
    with pytest.raises(UsageError, match="--preset must be one of"):
        Settings(corpus="c", preset="huge")


def test_every_option_is_in_the_parser_and_the_preset_only_values_are_not() -> None:
    flags = {a.dest for a in cli.build_parser()._actions}
    kinds = {f.name: f.metadata["kind"] for f in dataclasses.fields(Settings)}
    assert {n for n, k in kinds.items() if k == "option"} <= flags
    assert not {n for n, k in kinds.items() if k != "option"} - {"corpus", "preset"} & flags
    assert set(ARM_OPTIONS) <= flags


def test_the_judges_have_no_training_settings(capsys) -> None:
    """The judges are counted n-grams (`judge`): nothing of theirs trains, so there are no judge
    steps, learning rate or shape; only the size of the real sample that sets the quantiles."""
    with pytest.raises(SystemExit):
        cli.parse_args(BASE + ["--judge-steps", "5"])
    assert "--judge-steps" in capsys.readouterr().err
    assert [f.name for f in dataclasses.fields(Settings) if "judge" in f.name] == ["judge_real"]
    assert not [f.name for f in dataclasses.fields(config.Preset) if "judge" in f.name]


def test_settings_are_fixed_at_creation_and_only_seeds_may_change(tmp_path: Path) -> None:
    """Guards `resolve_settings`: the first command writes RUN/distill.json (options and internal
    fields, not the preset's own values); a re-run reads it back, refuses an option that differs
    and takes a new --seeds."""
    snap, run = SimpleNamespace(root=tmp_path / "snap"), tmp_path / "run"
    (tmp_path / "teacher").mkdir()
    s = resolve_settings("tiny", {"alpha": 0.5, "teacher": str(tmp_path / "teacher")}, snap, run)
    stored = json.loads((run / "distill.json").read_text())
    assert stored == s.stored() and "batch" not in stored and stored["teacher"] == str((tmp_path / "teacher").resolve())
    assert (s.alpha, s.seeds, s.student_steps, s.batch) == (0.5, 2, 16, 8)
    again = resolve_settings("tiny", {"seeds": 5}, snap, run)
    assert (again.alpha, again.seeds) == (0.5, 5) and json.loads((run / "distill.json").read_text())["seeds"] == 5
    with pytest.raises(UsageError, match="was created with --alpha 0.5"):
        resolve_settings("tiny", {"alpha": 0.2}, snap, run)
    with pytest.raises(UsageError, match="was created with --preset 'tiny'"):
        resolve_settings("demo", {}, snap, run)
    with pytest.raises(UsageError, match="--keep-quantile must be in"):
        resolve_settings("tiny", {"keep_quantile": 0.0}, snap, tmp_path / "other")


def test_the_arms_table_names_every_arm_the_loop_trains() -> None:
    assert [arm_info(n).name for n in ("student", "aug-noise", "aug-teacher-sample", "student_renorm")] == \
        ["student", "aug-NAME", "aug-NAME", "student_TAIL"]
    for name in ("student_x", "aug-", "judge-a"):
        with pytest.raises(KeyError):
            arm_info(name)
    assert [a.name for a in trained(set())] == ["student", "baseline"]
    # student, student_no_aug, student_no_ngram, the tail
    assert sum(a.kd for a in trained({"ablations", "compare_tail"})) == 4
    assert sorted(["aug-noise", "baseline", "teacher", "student_no_kd", "ngram", "student", "teacher_ngram"],
                  key=row_order) == \
        ["ngram", "teacher", "teacher_ngram", "student", "baseline", "student_no_kd", "aug-noise"]
    assert {o for a in ARMS for o in a.options} == set(ARM_OPTIONS)
