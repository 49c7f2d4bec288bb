"""What a distillation run is made of: `Settings`, every value the loop reads, and the presets.

Each field of `Settings` says by its metadata what it is:

- `option`: a command option of `python -m lm.distill` (`cli` builds the parser from the field:
  the flag from its name, the type from its annotation, its help, choices and the check its value
  must pass), stored in `RUN/distill.json`;
- `internal`: set by the command itself (the snapshot, the preset's name), stored;
- `preset_only`: the preset's alone (batch, the teacher's schedule, sample sizes),
  neither an option nor stored: the preset's name is.

A preset only supplies defaults: the model shapes plus a mapping of field -> value. A field with
no default of its own must be in every preset, and a preset naming anything but a field stops the
import. A run's settings are fixed when it is created: an option given again must equal the
stored one; only a `changeable` one (`--seeds`) may differ on a re-run.
"""
from __future__ import annotations

import dataclasses
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from lm.corpus import Snapshot
from lm.errors import UsageError
from common.files import read_json, write_json
from lm.losses import KL_KINDS, TAILS, LossConfig
from lm.model import ModelConfig, preset as model_preset
from lm.run import check_fixed

SETTINGS_FILE = "distill.json"
DEFAULT_CACHE_K = 32
OPTION, INTERNAL, PRESET_ONLY = "option", "internal", "preset_only"

ModelSpec = tuple[str, dict[str, Any]]  # an lm.model preset's name and overrides
Check = tuple[Callable[[Any], bool], str]  # a predicate and what it asks ("at least 1")


class _FromPreset:
    def __repr__(self) -> str:
        return "FROM_PRESET"


FROM_PRESET: Any = _FromPreset()  # a field not given: the preset's value, else the field's default
AT_LEAST_1: Check = (lambda v: v >= 1, "at least 1")
POSITIVE: Check = (lambda v: v > 0, "positive")
SHARE: Check = (lambda v: 0.0 <= v < 1.0, "in [0, 1)")


def option(help: str, default: Any = MISSING, *, choices: tuple[str, ...] | None = None, check: Check | None = None,
           changeable: bool = False, path: bool = False, exclusive: str | None = None) -> Any:
    """A command option. `default` MISSING: every preset gives it. `changeable`: may differ on a
    re-run; `path`: stored resolved; `exclusive`: options sharing it exclude each other."""
    return field(default=FROM_PRESET, metadata={"kind": OPTION, "help": help, "default": default, "choices": choices,
                                                "check": check, "changeable": changeable, "path": path,
                                                "exclusive": exclusive})


def internal(help: str) -> Any:
    return field(metadata={"kind": INTERNAL, "help": help})


def preset_only(help: str, default: Any = MISSING) -> Any:
    return field(default=FROM_PRESET, metadata={"kind": PRESET_ONLY, "help": help, "default": default})


def flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


@dataclass(frozen=True)
class Settings:
    """Everything a run reads; the options and internal fields are fixed at creation (distill.json)."""

    corpus: str = internal("the snapshot folder (from --corpus)")
    preset: str = internal("the preset's name (--preset)")
    seed: int = option("base of every seed: the judges' halves, the models, the augmentation rounds (seed "
                       "pair i: seed + i)", 0)
    # alpha and T: the best of a few tried on gl-ctg dev when the loop was written; no results file
    # backs them, so no bench figure does either
    alpha: float = option("weight of cross-entropy; 1 - alpha on the KL term", 0.2)
    temperature: float = option("softmax temperature of the KL term", 1.0)
    kl: str = option("KL(teacher || student) or the reverse", "forward", choices=KL_KINDS)
    top_k: int | None = option(f"KL on the teacher's top K tokens (default: all; {DEFAULT_CACHE_K} when cached)",
                               None, check=AT_LEAST_1)
    tail: str = option("top-k: keep the missing mass as a bucket, or renormalise", "bucket", choices=TAILS)
    cache: str = option("top-k teacher cache (auto: when it pays)", "auto", choices=("auto", "always", "never"))
    # 1.0: only variants worse than every sampled real sentence go; a tighter filter did not
    # beat a random one at the same kept fraction (bench/README.md, augmentation study)
    keep_quantile: float = option("drop variants worse than this quantile of real sentences (1.0: only those "
                                  "worse than all)", 1.0, check=(lambda v: 0.0 < v <= 1.0, "in (0, 1]"))
    rounds: int = option("augment-judge-distil rounds (stops early without dev gain)", check=AT_LEAST_1)
    # more pairs on a re-run; rounds may not change: round 1's student is a draw
    seeds: int = option("paired seeds per arm; may grow on a re-run", check=AT_LEAST_1, changeable=True)
    aug_share: float = option("share of training sequences from augmented text", check=SHARE)
    # noised text is an input, its clean parent the target: never a target itself
    noised_input: bool = option("noise variants as student input with their clean parents as targets", True)
    # a count model errs where the network does not: the mixture may beat either, and the
    # student learns it without needing the n-gram to run (lm.distill.ngram_teacher)
    teacher_ngram: bool = option("mix a token-level modified Kneser-Ney n-gram of the real train text into the "
                                 "teacher's soft targets, its weight and order chosen on dev (a top-k cache)", True)
    teacher: str | None = option("a run folder of ours to use as the teacher (its tokenizer is adopted)", None,
                                 path=True, exclusive="teacher")
    teacher_hf: str | None = option("a local Hugging Face causal LM folder (safetensors): sequence-level "
                                    "distillation", None, path=True, exclusive="teacher")
    # at most: every model stops early once dev stops improving
    student_steps: int = option("steps of every student and baseline, at most", check=AT_LEAST_1)
    teacher_steps: int = option("steps of the teacher trained here (real text only), at most", check=AT_LEAST_1)
    # chosen on dev for students and baselines alike (bench/tune.py)
    student_lr: float = option("peak learning rate of every student and baseline", check=POSITIVE)
    student_dropout: float = option("dropout of every student and baseline", 0.0, check=SHARE)
    batch: int = preset_only("sequences per step, every model")
    teacher_lr: float = preset_only("the teacher's peak learning rate")
    eval_every: int = preset_only("steps between dev evaluations (curves, best checkpoint, early stopping)")
    patience: int = preset_only("dev evaluations without a new best before a model stops")
    vocab_size: int | None = preset_only("tokenizer pieces (None: from the real text's size)", None)
    # the vocabulary varies with the corpus: the student's MLP narrows until it fits
    student_max_params: int | None = preset_only("the student's parameters, at most", None)
    eval_chars: int = preset_only("dev text for the training curves (final figures: all of dev and test)", 60_000)
    judge_real: int = preset_only("real train sentences whose scores set the quantiles (a sample)", 1000)
    teacher_samples: int = preset_only("--teacher-hf: real prefixes its teacher continues per round", 2000)
    # our own teacher's samples as an augmenter, unless the spec's `[augment.teacher_sample]`
    # says: off, as alone they made the student worse (bench/README.md, augmentation study)
    own_teacher_samples: int = preset_only("our teacher's samples per round", 0)
    sample_tokens: int = preset_only("new tokens per teacher sample", 48)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise UsageError(f"--preset must be one of {', '.join(PRESETS)}, not {self.preset!r}")
        values = PRESETS[self.preset].values
        for f in fields(self):
            if getattr(self, f.name) is FROM_PRESET:
                value = values.get(f.name, f.metadata["default"])
                if value is MISSING:
                    raise TypeError(f"{type(self).__name__}.{f.name}: not given, and preset {self.preset} has none")
                object.__setattr__(self, f.name, value)

    def stored(self) -> dict[str, Any]:
        """RUN/distill.json: the options and internal fields."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata["kind"] != PRESET_ONLY}

    def check(self) -> None:
        """Every option's check (a UsageError naming its flag); the loss's by `lm.losses.LossConfig`."""
        self.loss()
        for f in fields(self):
            rule, value = f.metadata.get("check"), getattr(self, f.name)
            if rule and value is not None and not rule[0](value):
                raise UsageError(f"{flag(f.name)} must be {rule[1]}, not {value}")

    def loss(self, kd: bool = True, tail: str | None = None, top_k: int | None = None) -> LossConfig:
        """The students' loss: alpha x CE + (1 - alpha) x KL, or CE alone (`kd` False)."""
        return LossConfig(alpha=self.alpha if kd else 1.0, temperature=self.temperature, kl=self.kl,
                          top_k=(self.top_k or 0) if top_k is None else top_k, tail=tail or self.tail)

    def student_model(self, vocab_size: int, context: int | None = None) -> ModelConfig:
        """The student's shape with the run's dropout, narrowed to `student_max_params`; `context`
        caps it (the teacher's)."""
        name, overrides = PRESETS[self.preset].student_shape
        cfg = model_preset(name, **{**overrides, "dropout": self.student_dropout, "vocab_size": vocab_size})
        return fit_params(cfg.replace(context=min(cfg.context, context or cfg.context)), self.student_max_params)

    def teacher_model(self, vocab_size: int) -> ModelConfig:
        return shape_model(PRESETS[self.preset].teacher_shape, vocab_size)


def shape_model(spec: ModelSpec, vocab_size: int) -> ModelConfig:
    name, overrides = spec
    return model_preset(name, **{**overrides, "vocab_size": vocab_size})


def fit_params(cfg: ModelConfig, max_params: int | None) -> ModelConfig:
    """The widest SwiGLU hidden size (a multiple of 16, at most the preset's) within `max_params`."""
    if not max_params or cfg.n_params() <= max_params:
        return cfg
    hidden = cfg.hidden_dim
    while hidden > 16 and cfg.replace(hidden_dim=hidden).n_params() > max_params:
        hidden -= 16
    return cfg.replace(hidden_dim=hidden)


@dataclass(frozen=True)
class Preset:
    """Model shapes (lm.model presets plus overrides, dropout among them) and defaults: `values`
    maps fields of `Settings` to this preset's value."""

    name: str
    student_shape: ModelSpec
    teacher_shape: ModelSpec
    values: Mapping[str, Any]

    def defaults(self) -> Settings:
        """The settings of a run of this preset given no option."""
        return Settings(corpus="", preset=self.name)

    def student_model(self, vocab_size: int, context: int | None = None) -> ModelConfig:
        return self.defaults().student_model(vocab_size, context)


def check_presets(cls: type, presets: Mapping[str, Preset]) -> None:
    """Loud at import: every field of `cls` has a kind; a preset names fields that a preset may
    set, and every one without a default of its own."""
    kinds = {f.name: f.metadata.get("kind") for f in fields(cls)}
    if unmarked := [k for k, v in kinds.items() if v not in (OPTION, INTERNAL, PRESET_ONLY)]:
        raise TypeError(f"{cls.__name__}: {unmarked} are neither option, internal nor preset_only")
    settable = {f.name for f in fields(cls) if kinds[f.name] != INTERNAL}
    needed = {f.name for f in fields(cls) if kinds[f.name] != INTERNAL and f.metadata["default"] is MISSING}
    for name, p in presets.items():
        if unknown := sorted(set(p.values) - settable):
            raise TypeError(f"preset {name}: {unknown} are not settings a preset sets")
        if missing := sorted(needed - set(p.values)):
            raise TypeError(f"preset {name}: no value for {missing}")


_STUDENT = ("student", {"hidden_dim": 288, "context": 128})
_SMALL = ("student", {"dim": 96, "n_layers": 2, "n_heads": 4, "hidden_dim": 256, "context": 128})
_PRESETS = (
    # for tests: seconds on two cores
    Preset("tiny", ("tiny", {}), ("tiny", {"dim": 64, "hidden_dim": 128}), dict(
        student_steps=16, teacher_steps=16, batch=8, student_lr=3e-3, teacher_lr=3e-3, seeds=2, rounds=1,
        aug_share=0.5, eval_every=8, patience=2, teacher_samples=40, sample_tokens=12)),
    # gl-ctg on two cores in at most 15 minutes, everything included (bench/README.md): the
    # compute goes to a teacher several times the student, trained on real text with the lighter
    # of two dropouts screened on dev (0.1 reached a better dev figure and stopped on dev; 0.2 was
    # still improving at its last step), then to the longest student the budget holds. Three
    # paired seeds do not fit the budget: one here, three in bench/distill.py.
    Preset("demo", _STUDENT, ("teacher", {"dim": 224, "n_layers": 4, "n_heads": 7, "hidden_dim": 608, "context": 128,
                                          "dropout": 0.1}),
           dict(student_steps=1500, teacher_steps=1000, batch=16, student_lr=3e-3, teacher_lr=2e-3, seeds=1, rounds=1,
                aug_share=0.3, eval_every=100, patience=3, student_max_params=800_000, judge_real=600,
                eval_chars=30_000)),
    # the full `teacher` preset with dropout, thousands of steps stopped early on dev, five
    # seeds, up to three rounds: hours on two cores
    Preset("full", _STUDENT, ("teacher", {"context": 128, "dropout": 0.2}), dict(
        student_dropout=0.1, student_steps=3000, teacher_steps=3000, batch=16, student_lr=2e-3, teacher_lr=1.5e-3,
        seeds=5, rounds=3, aug_share=0.3, eval_every=100, patience=3,
        student_max_params=800_000, eval_chars=150_000)),
    # bench/augment_study.py: data, not compute, is the limit. Every model trains until dev stops
    # improving or its schedule ends (many passes over a share of the corpus); small models keep
    # shares x arms x seeds near an hour on two cores.
    Preset("study", _SMALL, ("student", {"hidden_dim": 288, "context": 128, "dropout": 0.1}), dict(
        student_steps=800, teacher_steps=1000, batch=16, student_lr=3e-3, teacher_lr=3e-3, seeds=3, rounds=1,
        aug_share=0.5, eval_every=50, patience=3, judge_real=600, eval_chars=20_000, own_teacher_samples=400,
        sample_tokens=48)),
)
PRESETS: dict[str, Preset] = {p.name: p for p in _PRESETS}
check_presets(Settings, PRESETS)


def options(cls: type = Settings) -> list[dataclasses.Field]:
    return [f for f in fields(cls) if f.metadata["kind"] == OPTION]


def resolve_settings(preset: str, given: dict[str, Any], snapshot: Snapshot, run: Path) -> Settings:
    """The run's settings: the preset's, overridden by the options `given` (field -> value, for
    the options set); on a re-run the stored ones, which the options given again must equal
    (only a changeable one may differ)."""
    meta = {f.name: f.metadata for f in options()}
    if unknown := sorted(set(given) - set(meta)):
        raise TypeError(f"not options: {unknown}")
    given = {k: str(Path(v).resolve()) if meta[k]["path"] else v for k, v in given.items()}
    settings = Settings(corpus=str(snapshot.root.resolve()), preset=preset, **given)
    path = run / SETTINGS_FILE
    if path.is_file():
        stored = Settings(**read_json(path))
        fixed = {k: v for k, v in settings.stored().items()
                 if k not in meta or (k in given and not meta[k]["changeable"])}
        check_fixed(run, stored.stored(), fixed)
        settings = dataclasses.replace(stored, **{k: v for k, v in given.items() if meta[k]["changeable"]})
    settings.check()
    write_json(path, settings.stored())
    return settings
