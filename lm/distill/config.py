"""What a distillation run is made of: the presets (model shapes named after `lm.model`'s presets,
steps, rounds) and the settings fixed when a run is created (`RUN/distill.json`)."""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lm.corpus import Snapshot
from lm.errors import UsageError
from lm.files import read_json, write_json
from lm.losses import LossConfig
from lm.model import ModelConfig, preset as model_preset
from lm.run import check_fixed

SETTINGS_FILE = "distill.json"
DEFAULT_CACHE_K = 32

ModelSpec = tuple[str, dict[str, Any]]  # an lm.model preset's name and overrides


@dataclass(frozen=True)
class Preset:
    """Sizes, steps, seeds. Models are lm.model presets plus overrides (dropout among them)."""

    student: ModelSpec
    teacher: ModelSpec
    judge: ModelSpec          # the two cross-fitted judges (`judge`), each on half of train
    student_steps: int        # at most: every model stops early once dev stops improving
    judge_steps: int
    teacher_steps: int        # the teacher, on real train text only
    batch: int
    student_lr: float         # students and baselines alike (chosen on dev: bench/README.md)
    teacher_lr: float
    judge_lr: float
    seeds: int                # paired seeds per arm (student and baseline share each)
    rounds: int
    aug_share: float          # share of training sequences from augmented text
    eval_every: int           # steps between dev evaluations (curves, best checkpoint, early stopping)
    patience: int             # dev evaluations without a new best before a model stops
    vocab_size: int | None = None
    student_max_params: int | None = None  # narrow the student's MLP until it fits (the vocabulary varies)
    eval_chars: int = 60_000      # dev text for the training curves (final figures: all of dev and test)
    judge_real: int = 1000        # real train sentences whose scores set the quantiles (a sample)
    teacher_samples: int = 2000   # --teacher-hf: real prefixes its teacher continues per round (its lesson)
    # our own teacher's samples as an augmenter (`[augment.teacher_sample]` in the spec overrides):
    # off unless asked, as alone they cost 3-4% bits/char at 25% of gl-ctg (bench/README.md)
    own_teacher_samples: int = 0
    sample_tokens: int = 48

    def student_model(self, vocab_size: int, context: int | None = None) -> ModelConfig:
        """The student's shape: narrowed to `student_max_params`, `context` capped by the teacher's."""
        name, overrides = self.student
        cfg = model_preset(name, **{**overrides, "vocab_size": vocab_size})
        return fit_params(cfg.replace(context=min(cfg.context, context or cfg.context)), self.student_max_params)

    def teacher_model(self, vocab_size: int) -> ModelConfig:
        name, overrides = self.teacher
        return model_preset(name, **{**overrides, "vocab_size": vocab_size})

    def judge_model(self, vocab_size: int) -> ModelConfig:
        name, overrides = self.judge
        return model_preset(name, **{**overrides, "vocab_size": vocab_size})


_STUDENT = ("student", {"hidden_dim": 288, "context": 128})
PRESETS: dict[str, Preset] = {
    # for tests: seconds on two cores
    "tiny": Preset(student=("tiny", {}), teacher=("tiny", {"dim": 64, "hidden_dim": 128}), judge=("tiny", {}),
                   student_steps=16, judge_steps=12, teacher_steps=16, batch=8, student_lr=3e-3, teacher_lr=3e-3,
                   judge_lr=3e-3, seeds=2, rounds=1, aug_share=0.5, eval_every=8, patience=2, teacher_samples=40,
                   sample_tokens=12),
    # gl-ctg on two CPU cores in at most 15 minutes, everything included (bench/README.md). The
    # compute goes where it pays: the 3.3x teacher trains on real text for 400 steps (below the
    # n-gram; students learn from it fast), two small judges, then a 0.77M student (nanoGPT's
    # CPU shape with SwiGLU) and its baseline with three paired seeds each. The student learning
    # rate and dropout were chosen on dev for student and baseline alike (bench/tune.py): at a few
    # hundred steps dropout only slows them down.
    "demo": Preset(student=_STUDENT,
                   teacher=("teacher", {"dim": 224, "n_layers": 4, "n_heads": 7, "hidden_dim": 608, "context": 128}),
                   judge=("student", {"dim": 96, "n_layers": 2, "n_heads": 4, "hidden_dim": 256, "context": 128}),
                   student_steps=340, judge_steps=80, teacher_steps=400, batch=16, student_lr=3e-3,
                   teacher_lr=3e-3, judge_lr=3e-3, seeds=3, rounds=1, aug_share=0.3, eval_every=50, patience=2,
                   student_max_params=800_000, judge_real=600, eval_chars=30_000),
    # the full `teacher` preset (6.3x the student) with dropout, thousands of steps stopped early
    # on dev, five seeds, up to three rounds: hours on two cores
    "full": Preset(student=("student", {"hidden_dim": 288, "context": 128, "dropout": 0.1}),
                   teacher=("teacher", {"context": 128, "dropout": 0.2}), judge=_STUDENT,
                   student_steps=3000, judge_steps=1000, teacher_steps=3000, batch=16, student_lr=2e-3,
                   teacher_lr=1.5e-3, judge_lr=3e-3, seeds=5, rounds=3, aug_share=0.3, eval_every=100, patience=3,
                   student_max_params=800_000, eval_chars=150_000),
    # bench/augment_study.py: where data, not compute, is the limit. Every model trains until dev
    # stops improving or its cosine schedule ends (many passes over a quarter of gl-ctg); a 0.27M
    # student (the judges' shape) and a 0.77M teacher with dropout keep three fractions x many
    # arms x three seeds near an hour on two cores.
    "study": Preset(student=("student", {"dim": 96, "n_layers": 2, "n_heads": 4, "hidden_dim": 256, "context": 128}),
                    teacher=("student", {"hidden_dim": 288, "context": 128, "dropout": 0.1}),
                    judge=("student", {"dim": 96, "n_layers": 2, "n_heads": 4, "hidden_dim": 256, "context": 128}),
                    student_steps=800, judge_steps=150, teacher_steps=1000, batch=16, student_lr=3e-3,
                    teacher_lr=3e-3, judge_lr=3e-3, seeds=3, rounds=1, aug_share=0.5, eval_every=50, patience=3,
                    judge_real=600, eval_chars=20_000, own_teacher_samples=400, sample_tokens=48),
}


def fit_params(cfg: ModelConfig, max_params: int | None) -> ModelConfig:
    """The widest SwiGLU hidden size (a multiple of 16, at most the preset's) within `max_params`."""
    if not max_params or cfg.n_params() <= max_params:
        return cfg
    hidden = cfg.hidden_dim
    while hidden > 16 and cfg.replace(hidden_dim=hidden).n_params() > max_params:
        hidden -= 16
    return cfg.replace(hidden_dim=hidden)


@dataclass(frozen=True)
class Settings:
    """Everything fixed when a run is created (RUN/distill.json)."""

    corpus: str
    preset: str
    seed: int = 0
    # measured on gl-ctg (demo student and teacher, real text, 250 steps, dev bits/char): at
    # lr 3e-3, T = 2 with alpha 0.5 gave 3.01 against 2.43 without a teacher; at lr 1.5e-3,
    # T = 1 gave 2.34 (alpha 0.5) and 2.30 (alpha 0.2) against 2.47 without a teacher
    alpha: float = 0.2
    temperature: float = 1.0
    kl: str = "forward"
    top_k: int | None = None        # None: full distribution live, DEFAULT_CACHE_K when cached
    tail: str = "bucket"
    cache: str = "auto"
    # 1.0: keep every variant no worse than the worst real sentence sampled. At 25% of gl-ctg the
    # judges' 0.9 filter did not beat a random filter at the same kept fraction, nor no filter
    # (bench/README.md, augmentation study), so it is not the default
    keep_quantile: float = 1.0
    rounds: int = 1
    seeds: int = 1
    aug_share: float = 0.5
    noised_input: bool = True      # noised text is an input, its clean parent the target, never a target
    teacher: str | None = None
    teacher_hf: str | None = None
    student_steps: int = 0
    judge_steps: int = 0
    teacher_steps: int = 0
    student_lr: float = 0.0
    student_dropout: float = 0.0

    def loss(self, kd: bool = True, tail: str | None = None, top_k: int | None = None) -> LossConfig:
        """The students' loss: alpha x CE + (1 - alpha) x KL, or CE alone (`kd` False)."""
        return LossConfig(alpha=self.alpha if kd else 1.0, temperature=self.temperature, kl=self.kl,
                          top_k=(self.top_k or 0) if top_k is None else top_k, tail=tail or self.tail)

    def preset_values(self) -> Preset:
        """The run's preset with the steps, learning rate and dropout it was created with."""
        pre = PRESETS[self.preset]
        name, overrides = pre.student
        return dataclasses.replace(pre, student=(name, {**overrides, "dropout": self.student_dropout}),
                                   student_steps=self.student_steps, judge_steps=self.judge_steps,
                                   teacher_steps=self.teacher_steps, student_lr=self.student_lr)


CHANGEABLE = {"seeds"}  # may grow on a re-run: more pairs (rounds may not: round 1's student is a draw)
GIVEN = ("seed", "alpha", "temperature", "kl", "top_k", "tail", "cache", "keep_quantile", "rounds", "seeds",
         "aug_share", "noised_input", "teacher", "teacher_hf", "student_steps", "judge_steps", "teacher_steps",
         "student_lr", "student_dropout")


def resolve_settings(preset: str, given: dict[str, Any], snapshot: Snapshot, run: Path) -> Settings:
    """The run's settings: the preset's, overridden by the options `given` (Settings field ->
    value, for the options set); on a re-run the stored ones, which the options given again must
    equal (only --rounds may change)."""
    pre = PRESETS[preset]
    given = dict(given)
    for k in ("teacher", "teacher_hf"):
        if k in given:
            given[k] = str(Path(given[k]).resolve())
    base = Settings(corpus=str(snapshot.root.resolve()), preset=preset, rounds=pre.rounds, seeds=pre.seeds,
                    aug_share=pre.aug_share, student_steps=pre.student_steps, judge_steps=pre.judge_steps,
                    teacher_steps=pre.teacher_steps, student_lr=pre.student_lr,
                    student_dropout=pre.student[1].get("dropout", 0.0))
    settings = dataclasses.replace(base, **given)
    path = run / SETTINGS_FILE
    if path.is_file():
        stored = read_json(path)
        fixed = {k: v for k, v in asdict(settings).items()
                 if k not in CHANGEABLE and (k in given or k in ("corpus", "preset"))}
        check_fixed(run, asdict(Settings(**stored)), fixed)
        settings = dataclasses.replace(Settings(**stored), **{k: v for k, v in given.items() if k in CHANGEABLE})
    check(settings)
    write_json(path, asdict(settings))
    return settings


def check(s: Settings) -> None:
    s.loss()  # alpha, temperature, kl, tail: lm.losses.LossConfig checks them
    if not 0.0 < s.keep_quantile <= 1.0:
        raise UsageError(f"--keep-quantile must be in (0, 1], not {s.keep_quantile}")
    if s.rounds < 1:
        raise UsageError(f"--rounds must be at least 1, not {s.rounds}")
    if s.seeds < 1:
        raise UsageError(f"--seeds must be at least 1, not {s.seeds}")
    if not 0.0 <= s.aug_share < 1.0:
        raise UsageError(f"--aug-share must be in [0, 1), not {s.aug_share}")
    if s.top_k is not None and s.top_k < 1:
        raise UsageError(f"--top-k must be at least 1, not {s.top_k}")
    for k in ("student_steps", "judge_steps", "teacher_steps"):
        if getattr(s, k) < 1:
            raise UsageError(f"--{k.replace('_', '-')} must be at least 1")
    if s.student_lr <= 0:
        raise UsageError(f"--student-lr must be positive, not {s.student_lr}")
    if not 0.0 <= s.student_dropout < 1.0:
        raise UsageError(f"--student-dropout must be in [0, 1), not {s.student_dropout}")
