"""`python -m lm.distill --corpus OUT/NAME --out RUN [options]`: augmentation plus distillation.

From a corpus snapshot and its augmented text (`python -m pipelines.augment`; run here when
missing), a small student that learns from a large teacher, which also judges which augmented
text is worth learning from:

1. Tokenizer: SentencePiece on the train split plus the augmented text (never dev or test);
   with `--teacher RUN`, that run's tokenizer (token-level distillation needs one vocabulary).
2. Teacher: `--teacher RUN` (one of our run folders), `--teacher-hf PATH` (a local Hugging Face
   causal LM, safetensors only, no remote code), or trained here with the `teacher` model preset:
   first on real train text only (this model is the judge), then continued on real plus kept
   augmented text (the teacher). The judge never trains on what it judges.
3. Judging: the judge scores every variant and every real train sentence in bits per character,
   batched and jitted (`lm.judge`); per augmenter, variants worse than the `--keep-quantile` Q
   quantile of the real sentences are dropped.
4. Students: loss alpha x CE + (1 - alpha) x T^2 x KL (`lm.kd`; `--kl reverse`, `--top-k K`,
   `--tail renorm|bucket`). Teacher outputs are computed in the student's jitted step, or read
   from a top-k cache (`RUN/teacher-cache/`) when `--cache always`, or with `--cache auto` when the
   students would read more teacher tokens than the cache holds. `--noised-input`: noise variants
   become the student's input while their clean parents stay the targets. With `--teacher-hf`:
   sequence-level distillation (the teacher's samples continuing real prefixes join the
   augmented text as augmenter `teacher-sample`, judged like the rest).
5. Baselines with the same preset, steps and seed: `baseline` (real text, CE), `student_no_kd`
   (real plus kept augmented, CE), `student_no_aug` (real text, KD). `student` = KD + kept
   augmented text.
6. Rounds: from round 2 on, `pipelines.augment` runs again with a new seed; mixture weights per
   augmenter come from the previous round (kept fraction x dev gain, `lm.gain`); the loop stops
   when dev bits per character stops improving. The best round's student is `student`.
7. Report: RUN/report.json, RUN/report.md, RUN/dev_bpc.png, RUN/kept_fraction.png.

Re-running the same command after an interruption continues: a model whose folder holds
`DONE.json` (written after its final checkpoint and evaluation) is not trained again, an
unfinished one resumes from its last checkpoint, and judged rounds are read back.
Exit codes: 0 ok, 1 failure, 2 usage.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lm import distill_report, parallel
from lm.compile_cache import enable_compile_cache
from lm.corpus import Snapshot, open_snapshot
from lm.data import Packed, pack, token_stream
from lm.errors import DataError, UsageError, run_cli
from lm.evaluate import evaluate
from lm.gain import dev_gains, next_weights
from lm.judge import bits_per_char, quantile_filter
from lm.kd_train import PhaseConfig, Teacher, train_phase
from lm.loader import FlaxModel, load_model
from lm.mixture import MixBatches, Pool
from lm.model import ModelConfig, make_apply, preset as model_preset
from lm.pools import noised_pool, pool_tokens, real_pool, text_pool
from lm.teacher_cache import TeacherCache, pays
from lm.tokenizer import MODEL_FILE, Tokenizer, default_vocab_size, train_tokenizer

SETTINGS_FILE, DONE_FILE = "distill.json", "DONE.json"
TEACHER_SAMPLE = "teacher-sample"
DEFAULT_CACHE_K = 32
VARIANT_COLUMNS = ("id", "text", "parent_id", "augmenter", "params", "seed")


@dataclass(frozen=True)
class Preset:
    """Sizes, steps and rounds. Models are lm.model's `student` and `teacher` presets plus overrides."""

    student: dict[str, Any]
    teacher: dict[str, Any]
    student_steps: int
    judge_steps: int          # teacher on real text only (the judge)
    teacher_steps: int        # the judge continued on real + kept augmented text (the teacher)
    batch: int
    student_lr: float
    teacher_lr: float
    rounds: int
    aug_share: float          # share of training sequences from augmented text
    eval_points: int
    vocab_size: int | None = None
    student_max_params: int | None = None  # narrow the student's MLP until it fits (the vocabulary varies)
    eval_chars: int = 60_000      # dev text for the training curves (final figures: all of dev and test)
    judge_real: int = 1000        # real train sentences whose scores set the quantile (a sample)
    teacher_samples: int = 2000   # --teacher-hf: real prefixes continued by the teacher per round
    sample_tokens: int = 48


PRESETS: dict[str, Preset] = {
    # for tests: seconds on two cores
    "tiny": Preset(student=dict(dim=32, n_layers=2, n_heads=2, hidden_dim=64, context=32),
                   teacher=dict(dim=64, n_layers=2, n_heads=2, hidden_dim=128, context=32),
                   student_steps=16, judge_steps=16, teacher_steps=8, batch=8, student_lr=3e-3, teacher_lr=3e-3,
                   rounds=1, aug_share=0.5, eval_points=2, teacher_samples=40, sample_tokens=12),
    # gl-ctg on two CPU cores in at most 15 minutes, everything included: a 0.77M student
    # (nanoGPT's CPU shape with SwiGLU) and a 3.3x teacher, a few hundred steps each. Students
    # at 3e-3 were as likely to stall on the unigram plateau as not (dev bits/char 2.43 or 2.63
    # by the initial draw alone); 1.5e-3 varied less and learnt as well.
    "demo": Preset(student=dict(dim=128, n_layers=4, n_heads=4, hidden_dim=288, context=128),
                   teacher=dict(dim=224, n_layers=4, n_heads=7, hidden_dim=608, context=128),
                   student_steps=250, judge_steps=200, teacher_steps=60, batch=16, student_lr=1.5e-3,
                   teacher_lr=2e-3, rounds=1, aug_share=0.3, eval_points=5,
                   student_max_params=800_000, judge_real=500),
    # the full `teacher` preset (6.3x the student), several times the steps, up to three rounds:
    # an hour or more on two cores
    "full": Preset(student=dict(dim=128, n_layers=4, n_heads=4, hidden_dim=288, context=128),
                   teacher=dict(context=128),
                   student_steps=1500, judge_steps=1000, teacher_steps=500, batch=32, student_lr=3e-3,
                   teacher_lr=1.5e-3, rounds=3, aug_share=0.3, eval_points=10,
                   student_max_params=800_000, eval_chars=150_000),
}


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
    keep_quantile: float = 0.9
    rounds: int = 1
    aug_share: float = 0.5
    noised_input: bool = False
    teacher: str | None = None
    teacher_hf: str | None = None
    student_steps: int = 0
    judge_steps: int = 0
    teacher_steps: int = 0
    student_lr: float = 0.0


CHANGEABLE = {"rounds"}  # may grow on a re-run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lm.distill", description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", required=True, help="OUT/NAME (follows LATEST) or a version folder")
    p.add_argument("--out", required=True, help="run folder (re-run the same command to resume)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="demo", help="sizes, steps, rounds (demo)")
    t = p.add_mutually_exclusive_group()
    t.add_argument("--teacher", help="a run folder of ours to use as the teacher (its tokenizer is adopted)")
    t.add_argument("--teacher-hf", help="a local Hugging Face causal LM folder (safetensors): sequence-level distillation")
    p.add_argument("--rounds", type=int, help="augment-judge-distil rounds (stops early without dev gain)")
    p.add_argument("--alpha", type=float, help="weight of cross-entropy; 1 - alpha on the KL term (0.2)")
    p.add_argument("--temperature", type=float, help="softmax temperature of the KL term (1.0)")
    p.add_argument("--kl", choices=("forward", "reverse"), help="KL(teacher || student) or the reverse")
    p.add_argument("--top-k", type=int, help=f"KL on the teacher's top K tokens (default: all; {DEFAULT_CACHE_K} when cached)")
    p.add_argument("--tail", choices=("bucket", "renorm"), help="top-k: keep the missing mass as a bucket, or renormalise")
    p.add_argument("--cache", choices=("auto", "always", "never"), help="top-k teacher cache (auto: when it pays)")
    p.add_argument("--keep-quantile", type=float, help="drop variants worse than this quantile of real sentences (0.9)")
    p.add_argument("--aug-share", type=float, help="share of training sequences from augmented text")
    p.add_argument("--noised-input", action="store_true", default=None,
                   help="noise variants as student input with their clean parents as targets")
    p.add_argument("--seed", type=int)
    p.add_argument("--student-steps", type=int, help="override the preset")
    p.add_argument("--judge-steps", type=int, help="override the preset")
    p.add_argument("--teacher-steps", type=int, help="override the preset")
    p.add_argument("--student-lr", type=float, help="peak learning rate of every student (override the preset)")
    p.add_argument("--no-baselines", action="store_true", help="skip baseline, student_no_kd, student_no_aug")
    p.add_argument("--compare-tail", action="store_true",
                   help="also train the student with the other top-k tail (student_renorm or student_bucket)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def resolve_settings(args: argparse.Namespace, snapshot: Snapshot, run: Path) -> Settings:
    pre = PRESETS[args.preset]
    given = {k: getattr(args, k) for k in ("seed", "alpha", "temperature", "kl", "top_k", "tail", "cache",
                                          "keep_quantile", "rounds", "aug_share", "noised_input", "teacher",
                                          "teacher_hf", "student_steps", "judge_steps", "teacher_steps", "student_lr")
             if getattr(args, k) is not None}
    for k in ("teacher", "teacher_hf"):
        if k in given:
            given[k] = str(Path(given[k]).resolve())
    base = Settings(corpus=str(snapshot.root.resolve()), preset=args.preset, rounds=pre.rounds,
                    aug_share=pre.aug_share, student_steps=pre.student_steps, judge_steps=pre.judge_steps,
                    teacher_steps=pre.teacher_steps, student_lr=pre.student_lr)
    settings = dataclasses.replace(base, **given)
    path = run / SETTINGS_FILE
    if path.is_file():
        stored = json.loads(path.read_text(encoding="utf-8"))
        old = Settings(**stored)
        for f in dataclasses.fields(Settings):
            a, b = getattr(old, f.name), getattr(settings, f.name)
            if a != b and f.name not in CHANGEABLE and (f.name in given or f.name in ("corpus", "preset")):
                raise UsageError(f"{run} was created with {f.name.replace('_', '-')} = {a!r}, not {b!r}: "
                                 f"re-run with the same options, or start a new --out")
        settings = dataclasses.replace(old, **{k: v for k, v in given.items() if k in CHANGEABLE})
    _check(settings)
    run.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(settings), indent=2) + "\n", encoding="utf-8")
    return settings


def _check(s: Settings) -> None:
    if not 0.0 <= s.alpha <= 1.0:
        raise UsageError(f"--alpha must be in [0, 1], not {s.alpha}")
    if s.temperature <= 0:
        raise UsageError(f"--temperature must be positive, not {s.temperature}")
    if not 0.0 < s.keep_quantile <= 1.0:
        raise UsageError(f"--keep-quantile must be in (0, 1], not {s.keep_quantile}")
    if s.rounds < 1:
        raise UsageError(f"--rounds must be at least 1, not {s.rounds}")
    if not 0.0 <= s.aug_share < 1.0:
        raise UsageError(f"--aug-share must be in [0, 1), not {s.aug_share}")
    if s.top_k is not None and s.top_k < 1:
        raise UsageError(f"--top-k must be at least 1, not {s.top_k}")
    for k in ("student_steps", "judge_steps", "teacher_steps"):
        if getattr(s, k) < 1:
            raise UsageError(f"--{k.replace('_', '-')} must be at least 1")
    if s.student_lr <= 0:
        raise UsageError(f"--student-lr must be positive, not {s.student_lr}")


# ---- augmented text ------------------------------------------------------------------------
def read_variants(folder: Path) -> list[dict[str, Any]]:
    files = sorted(folder.rglob("*.parquet"))
    rows: list[dict[str, Any]] = []
    for f in files:
        rows += pq.read_table(f, columns=list(VARIANT_COLUMNS)).to_pylist()
    rows.sort(key=lambda r: (r["augmenter"], r["parent_id"], r["params"], r["id"]))
    return rows


def read_variants_file(path: Path) -> list[dict[str, Any]]:
    return pq.read_table(path, columns=list(VARIANT_COLUMNS)).to_pylist()


def write_variants(path: Path, rows: list[dict[str, Any]], extra: dict[str, list] | None = None) -> None:
    cols = {c: [r[c] for r in rows] for c in VARIANT_COLUMNS}
    table = pa.table({**cols, **(extra or {})})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def ensure_augmented(corpus: str, snapshot: Snapshot) -> Path:
    """The snapshot's augmented set, made with pipelines.augment when missing."""
    folder = snapshot.augmented_dir() / "train"
    if folder.is_dir() and any(folder.glob("*.parquet")):
        return folder
    from pipelines.augment import augment_snapshot
    from pipelines.errors import ScarceError
    print(f"no augmented text in {snapshot.root}: running pipelines.augment", file=sys.stderr)
    try:
        augment_snapshot(str(snapshot.root.parent), version=snapshot.version)
    except ScarceError as exc:
        raise DataError(f"augmentation failed: {exc}") from exc
    return folder


def augment_round(run: Path, snapshot: Snapshot, seed: int, weights: dict[str, float], floor: float = 0.05) -> list[dict]:
    """Run pipelines.augment again with a new seed on a shadow of the snapshot (the snapshot's own
    augmented set is left alone), with the augmenters the previous round weighted above `floor`.
    Deterministic backends (Apertium, beam search) are skipped: a new seed gives them nothing new."""
    from pipelines.augment import augment_snapshot
    from pipelines.errors import ScarceError
    from pipelines.spec import parse_spec
    from augment.registry import parse_augment

    spec_path = snapshot.root / "spec.toml"
    spec = parse_spec(spec_path.read_text(encoding="utf-8"), str(spec_path))
    config = parse_augment(spec.augment, spec.language)
    steps = []
    for step, raw in zip(config.steps, spec.augment["steps"]):
        deterministic = step.kind == "backtranslate" and not step.params.get("do_sample")
        if not deterministic and weights.get(step.name, 0.0) >= floor:
            steps.append(raw)
    if not steps:
        return []
    shadow = run / "rounds" / f"seed-{seed}" / snapshot.name
    vdir = shadow / snapshot.version
    vdir.mkdir(parents=True, exist_ok=True)
    for name in ("train", "dev", "test", "manifest.json", "spec.toml"):
        link = vdir / name
        if not link.exists():
            link.symlink_to((snapshot.root / name).resolve())
    (shadow / "LATEST").write_text(snapshot.version + "\n", encoding="utf-8")
    spec = dataclasses.replace(spec, augment={**spec.augment, "steps": steps})
    try:
        augment_snapshot(str(shadow), spec=spec, seed=seed)
    except ScarceError as exc:
        raise DataError(f"round augmentation failed: {exc}") from exc
    return read_variants(vdir / "augmented" / "train")


# ---- the loop ------------------------------------------------------------------------------
class Distiller:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.run = Path(args.out)
        self.snapshot = open_snapshot(args.corpus)
        self.s = resolve_settings(args, self.snapshot, self.run)
        self.pre = dataclasses.replace(PRESETS[self.s.preset], student_steps=self.s.student_steps,
                                       judge_steps=self.s.judge_steps, teacher_steps=self.s.teacher_steps,
                                       student_lr=self.s.student_lr)
        self.quiet = args.quiet
        self.models = self.run / "models"
        self.t0 = time.perf_counter()
        self.hf = None
        self.kd_mode: str | None = None
        self.top_k: int | None = None
        self.teacher_model: FlaxModel | None = None

    # -- helpers
    def log(self, msg: str) -> None:
        print(f"[distill {time.perf_counter() - self.t0:6.0f}s] {msg}", file=sys.stderr, flush=True)

    def done(self, name: str) -> dict[str, Any] | None:
        path = self.models / name / DONE_FILE
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def mark_done(self, name: str, info: dict[str, Any]) -> dict[str, Any]:
        path = self.models / name / DONE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
        return info

    def evaluate_model(self, model: Any) -> dict[str, Any]:
        dev = evaluate(model, "dev", str(self.snapshot.root))
        test = evaluate(model, "test", str(self.snapshot.root))
        return {"dev_bits_per_char": dev["bits_per_char"], "test_bits_per_char": test["bits_per_char"],
                "dev_nats_per_char": dev["nats_per_char"], "test_nats_per_char": test["nats_per_char"]}

    # -- tokenizer and data
    def tokenizer(self, aug_rows: list[dict]) -> Tokenizer:
        path = self.run / MODEL_FILE
        if path.is_file():
            return Tokenizer.load(path)
        if self.s.teacher:
            tok = Tokenizer.load(Path(self.s.teacher) / MODEL_FILE)
        else:
            real = self.snapshot.documents("train")
            # the size follows the real text (augmented text repeats it): 512 for gl-ctg, 1024 for
            # tinyshakespeare; the pieces are learnt from both
            size = self.pre.vocab_size or default_vocab_size(len(self.snapshot.separator.join(real)))
            tok = train_tokenizer(real + [r["text"] for r in aug_rows], size)
        tok.save(path)
        return tok

    def dev_packed(self, context: int) -> tuple[Packed | None, int]:
        """Dev text for the curves and best-checkpoint choice during training: the split's text up
        to `eval_chars` (cut at a record boundary), block windows. Final figures use lm.evaluate."""
        text = self.snapshot.text("dev")
        if not text:
            return None, 0
        cap = self.pre.eval_chars
        if cap and len(text) > cap:
            cut = text.rfind(self.snapshot.separator, 0, cap)
            text = text[:cut if cut > 0 else cap]
        key = f"{self.snapshot.name}/{self.snapshot.version}/dev/first{len(text)}"
        return pack(token_stream(self.tok, [text], key), context, self.tok.eos_id), len(text)

    def build_pools(self, kept: list[dict], names: set[str] | None = None) -> list[Pool]:
        """One pool per augmenter (only `names` when given); noise ones noised-input when asked."""
        by_aug: dict[str, list[dict]] = {}
        for r in kept:
            if names is None or r["augmenter"] in names:
                by_aug.setdefault(r["augmenter"], []).append(r)
        parents = {r["id"]: r["text"] for r in self.snapshot.records("train")} if self.s.noised_input else {}
        pools = []
        ctx, sep = self.student_cfg.context, self.snapshot.separator
        for name, rows in sorted(by_aug.items()):
            if self.s.noised_input and self.noise_kinds.get(name) == "noise":
                pairs = [(parents[r["parent_id"]], r["text"]) for r in rows if r["parent_id"] in parents]
                pools.append(noised_pool(name, self.tok, pairs, ctx, sep))
            else:
                pools.append(text_pool(name, self.tok, [r["text"] for r in rows], ctx, sep))
        return pools

    # -- teacher and judge
    def train_judge(self) -> FlaxModel:
        name = "judge"
        if not self.done(name):
            cfg = model_preset("teacher", **{**self.pre.teacher, "vocab_size": self.tok.vocab_size})
            real = real_pool(self.tok, self.snapshot.documents("train"), cfg.context, self._key("train"))
            dev, dev_chars = self.dev_packed(cfg.context)
            phase = PhaseConfig(steps=self.pre.judge_steps, batch=self.pre.batch, lr=self.pre.teacher_lr,
                                warmup=max(1, self.pre.judge_steps // 10), seed=self.s.seed,
                                eval_points=self.pre.eval_points)
            data = MixBatches(real, [], {}, 0.0, phase.batch, self.s.seed)
            self.log(f"judge: teacher preset ({cfg.n_params():,} params) on real train text, {phase.steps} steps")
            summary = train_phase(self.models / name, name, cfg, phase, data, dev, dev_chars, self.tok, self.snapshot,
                                  quiet=self.quiet, extra={"data": "real"})
            self.mark_done(name, summary)
        return load_model(self.models / name)

    def _key(self, split: str) -> str:
        return f"{self.snapshot.name}/{self.snapshot.version}/{split}"

    def train_teacher(self, judge: FlaxModel, kept: list[dict]) -> FlaxModel:
        name = "teacher"
        if not self.done(name):
            cfg = judge.cfg
            real = real_pool(self.tok, self.snapshot.documents("train"), cfg.context, self._key("train"))
            pools = [text_pool(n, self.tok, [r["text"] for r in kept if r["augmenter"] == n], cfg.context,
                               self.snapshot.separator) for n in sorted({r["augmenter"] for r in kept})]
            weights = {p.name: len(p) for p in pools}
            dev, dev_chars = self.dev_packed(cfg.context)
            phase = PhaseConfig(steps=self.pre.teacher_steps, batch=self.pre.batch, lr=self.pre.teacher_lr,
                                warmup=max(1, self.pre.teacher_steps // 10), seed=self.s.seed + 1,
                                eval_points=max(2, self.pre.eval_points // 2))
            data = MixBatches(real, pools, weights, self.s.aug_share, phase.batch, self.s.seed + 1)
            self.log(f"teacher: the judge continued on real + {len(kept):,} kept variants, {phase.steps} steps")
            summary = train_phase(self.models / name, name, cfg, phase, data, dev, dev_chars, self.tok, self.snapshot,
                                  start_params=judge.params, quiet=self.quiet, extra={"data": "real+kept", "from": "judge"})
            model = load_model(self.models / name)
            j = self.done("judge")
            seconds = j["train_seconds"] + summary["train_seconds"]
            tokens = j["tokens"] + summary["tokens"]
            self.mark_done(name, {"params": cfg.n_params(), **self.evaluate_model(model), "train_seconds": round(seconds, 3),
                                  "tokens_per_second": round(tokens / seconds, 1) if seconds else 0.0,
                                  "steps": {"judge": j["steps"], "continued": summary["steps"]}})
        return load_model(self.models / name)

    def external_teacher(self) -> Any:
        """--teacher RUN or --teacher-hf PATH: loaded, evaluated once (marker), returned."""
        if self.s.teacher_hf:
            from lm.hf_teacher import HFTeacher
            model = HFTeacher(self.s.teacher_hf)
            self.hf = model
        else:
            model = load_model(self.s.teacher)
            if not isinstance(model, FlaxModel):
                raise UsageError(f"--teacher {self.s.teacher}: not a Flax run folder")
            info = json.loads((Path(self.s.teacher) / "run.json").read_text(encoding="utf-8"))
            if info.get("train", {}).get("augmented"):
                self.log("warning: the --teacher run trained on augmented text: it judges text it may have seen")
        if not self.done("teacher"):
            (self.models / "teacher").mkdir(parents=True, exist_ok=True)
            seconds, tps = None, None
            if not self.s.teacher_hf:
                seconds, tps = _run_speed(Path(self.s.teacher))
            n = model.n_params if self.s.teacher_hf else model.cfg.n_params()
            self.mark_done("teacher", {"params": n, **self.evaluate_model(model), "train_seconds": seconds,
                                       "tokens_per_second": tps, "source": self.s.teacher_hf or self.s.teacher})
        return model

    def real_scores(self, judge: Any) -> np.ndarray:
        path = self.run / "judge" / "real_bpc.npy"
        if path.is_file():
            return np.load(path)
        texts = [r["text"] for r in self.snapshot.records("train")]
        if len(texts) > self.pre.judge_real:  # a quantile needs a sample, not every sentence
            pick = np.sort(np.random.default_rng([self.s.seed, 5]).permutation(len(texts))[: self.pre.judge_real])
            texts = [texts[i] for i in pick]
        t = time.perf_counter()
        scores = bits_per_char(judge.nll, judge.tokenizer.encode, judge.tokenizer.eos_id, texts, judge.context)
        self.log(f"judge: {len(texts):,} real train sentences scored in {time.perf_counter() - t:.1f}s, "
                 f"median {np.nanmedian(scores):.3f} bits/char")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, scores)
        return scores

    def judge_round(self, r: int, rows: list[dict], judge: Any, real_bpc: np.ndarray) -> tuple[list[dict], dict]:
        """Score and filter a round's new variants (read back when already judged)."""
        path = self.run / "rounds" / f"r{r}" / "judged.parquet"
        if path.is_file():
            table = pq.read_table(path).to_pylist()
            bpc = np.asarray([x["bits_per_char"] for x in table], np.float64)
            rows = [{c: x[c] for c in VARIANT_COLUMNS} for x in table]
        else:
            t = time.perf_counter()
            bpc = bits_per_char(judge.nll, judge.tokenizer.encode, judge.tokenizer.eos_id,
                                [x["text"] for x in rows], judge.context)
            self.log(f"round {r}: judged {len(rows):,} variants in {time.perf_counter() - t:.1f}s")
        verdict = quantile_filter(real_bpc, bpc, [x["augmenter"] for x in rows], self.s.keep_quantile)
        if not path.is_file():
            write_variants(path, rows, {"bits_per_char": bpc.tolist(), "kept": verdict.keep.tolist()})
        kept = [x for x, k in zip(rows, verdict.keep) if k]
        return kept, {"threshold": verdict.threshold, "augmenters": verdict.per_augmenter,
                      "median_bpc": {a: float(np.nanmedian(bpc[[x["augmenter"] == a for x in rows]]))
                                     for a in verdict.per_augmenter}}

    def teacher_samples(self, r: int, seed: int) -> list[dict]:
        """Sequence-level distillation: the HF teacher continues prefixes of real train sentences."""
        from pipelines.records import record_id
        path = self.run / "rounds" / f"r{r}" / "teacher-samples.parquet"
        if path.is_file():
            return read_variants_file(path)
        recs = self.snapshot.records("train")
        rng = np.random.default_rng([seed, 11])
        picks = rng.permutation(len(recs))[: self.pre.teacher_samples]
        prefixes, parents = [], []
        for i in picks:
            words = recs[i]["text"].split(" ")
            if len(words) < 4:
                continue
            prefixes.append(" ".join(words[: max(3, len(words) // 3)]))
            parents.append(recs[i]["id"])
        t = time.perf_counter()
        conts = self.hf.sample(prefixes, seed, max_new_tokens=self.pre.sample_tokens, temperature=1.0)
        known = {x["id"] for x in recs}
        rows, seen = [], set()
        for prefix, cont, parent in zip(prefixes, conts, parents):
            text = (prefix + cont).strip()
            rid = record_id(text)
            if not cont.strip() or rid in known or rid in seen:
                continue
            seen.add(rid)
            rows.append({"id": rid, "text": text, "parent_id": parent, "augmenter": TEACHER_SAMPLE,
                         "params": json.dumps({"max_new_tokens": self.pre.sample_tokens, "temperature": 1.0,
                                               "prefix": "first third of the words"}), "seed": int(seed)})
        self.log(f"round {r}: {len(rows):,} teacher samples in {time.perf_counter() - t:.1f}s")
        write_variants(path, rows)
        return rows

    # -- students
    def student_phase(self, kd: bool) -> PhaseConfig:
        """Every student (and baseline) shares these steps, schedule and seed."""
        return PhaseConfig(steps=self.pre.student_steps, batch=self.pre.batch, lr=self.pre.student_lr,
                           warmup=max(1, self.pre.student_steps // 10), seed=self.s.seed,
                           eval_points=self.pre.eval_points, alpha=self.s.alpha if kd else 1.0,
                           temperature=self.s.temperature, kl=self.s.kl, top_k=self.top_k or 0, tail=self.s.tail)

    def train_student(self, name: str, pools: list[Pool], weights: dict[str, float], kd: bool,
                      tail: str | None = None) -> dict[str, Any]:
        info = self.done(name)
        if info:
            return info
        self.ensure_kd()
        phase = self.student_phase(kd)
        if tail:
            phase = dataclasses.replace(phase, tail=tail)
        real = self.real
        data = MixBatches(real, pools, weights, self.s.aug_share if pools else 0.0, phase.batch, self.s.seed)
        teacher = None
        if kd and self.kd_mode == "live":
            teacher = Teacher(params=self.teacher_model.params)
        elif kd and self.kd_mode == "cached":
            teacher = Teacher(cache=self.cache)
        self.log(f"{name}: {phase.steps} steps, {'KD (' + self.kd_mode + ')' if kd else 'CE'}, "
                 f"real + {', '.join(p.name for p in pools) or 'nothing else'}")
        summary = train_phase(self.models / name, name, self.student_cfg, phase, data, self.dev, self.dev_chars,
                              self.tok, self.snapshot, teacher=teacher,
                              teacher_cfg=self.teacher_model.cfg if teacher and self.kd_mode == "live" else None,
                              quiet=self.quiet, extra={"pools": [p.name for p in pools], "weights": weights, "kd": kd})
        model = load_model(self.models / name)
        return self.mark_done(name, {"params": self.student_cfg.n_params(), **self.evaluate_model(model),
                                     "train_seconds": summary["train_seconds"],
                                     "tokens_per_second": summary["tokens_per_second"], "steps": summary["steps"],
                                     "pools": [p.name for p in pools], "weights": weights, "kd": kd})

    def ensure_kd(self) -> None:
        """Decide once how students get soft targets: kd_mode "live" (the teacher inside the jitted
        step), "cached" (top-k cache) or "seq" (Hugging Face teacher: its samples are the lesson)."""
        if self.kd_mode is not None:
            return
        self.top_k = self.s.top_k
        if self.s.teacher_hf:
            self.kd_mode = "seq"
            return
        if self.teacher_model is None:
            self.teacher_model = load_model(self.models / "teacher")
        students = self.s.rounds + (0 if self.args.no_baselines else 1)
        # the pools' size, estimated before judging: real text and every variant
        estimate = pool_tokens([self.real]) * (1 + self.n_variants / max(1, self.n_train))
        cached = self.s.cache == "always" or (
            self.s.cache == "auto" and pays(students, self.pre.student_steps, self.pre.batch,
                                            self.student_cfg.context, int(estimate)))
        if cached:
            self.kd_mode = "cached"
            self.top_k = self.s.top_k or DEFAULT_CACHE_K
            teacher_id = f"{self.teacher_model.info.get('path')}@{self.teacher_model.info.get('checkpoint')}"
            self.cache = TeacherCache(self.run, teacher_id, self.top_k, self.s.temperature,
                                      make_apply(self.teacher_model.cfg), self.teacher_model.params)
        else:
            self.kd_mode = "live"

    # -- main
    def run_all(self) -> dict[str, Any]:
        s = self.s
        aug_dir = ensure_augmented(self.args.corpus, self.snapshot)
        stats_path = aug_dir.parent / "stats.json"
        stats = json.loads(stats_path.read_text(encoding="utf-8")) if stats_path.is_file() else {}
        self.noise_kinds = {n: a.get("augmenter") for n, a in stats.get("augmenters", {}).items()}
        aug_rows = read_variants(aug_dir)
        if not aug_rows:
            raise DataError(f"no augmented variants in {aug_dir}")
        self.n_variants, self.n_train = len(aug_rows), len(self.snapshot.records("train"))
        self.tok = self.tokenizer(aug_rows)
        self.log(f"{self.snapshot.name} {self.snapshot.version}: {len(aug_rows):,} augmented variants, "
                 f"tokenizer {self.tok.vocab_size} pieces")

        # teacher / judge
        if s.teacher or s.teacher_hf:
            judge = self.external_teacher()
            self.teacher_model = judge if s.teacher else None
        else:
            judge = self.train_judge()
            self.teacher_model = None
        ctx = PRESETS[s.preset].student["context"]
        if self.teacher_model is not None:
            ctx = min(ctx, self.teacher_model.context)
        self.student_cfg = fit_params(model_preset("student", **{**self.pre.student, "context": ctx,
                                                                  "vocab_size": self.tok.vocab_size}),
                                      self.pre.student_max_params)
        self.real = real_pool(self.tok, self.snapshot.documents("train"), ctx, self._key("train"))
        self.dev, self.dev_chars = self.dev_packed(ctx)
        real_bpc = self.real_scores(judge)

        rounds: list[dict[str, Any]] = []
        all_kept: list[dict] = []
        weights: dict[str, float] = {}
        best_round = None
        for r in range(1, s.rounds + 1):
            seed_r = _augment_seed(self.snapshot) + (r - 1) * 1000 + s.seed
            record_path = self.run / "rounds" / f"r{r}" / "round.json"
            if record_path.is_file():
                rec = json.loads(record_path.read_text(encoding="utf-8"))
                new_kept = read_variants_file(self.run / "rounds" / f"r{r}" / "kept.parquet")
                all_kept = _merge(all_kept, new_kept)
                rounds.append(rec)
                weights = rec["next_weights"]
                if best_round is None or rec["dev_bits_per_char"] < best_round["dev_bits_per_char"]:
                    best_round = rec
                if self._stop(rounds):
                    break
                continue
            # this round's new variants
            if r == 1:
                new = list(aug_rows)
            else:
                new = augment_round(self.run, self.snapshot, seed_r, weights)
            if self.hf is not None and (r == 1 or weights.get(TEACHER_SAMPLE, 0.0) >= 0.05):
                new += self.teacher_samples(r, seed_r)
            have = {x["id"] for x in all_kept}
            new = [x for x in new if x["id"] not in have]
            kept, verdict = self.judge_round(r, new, judge, real_bpc)
            write_variants(self.run / "rounds" / f"r{r}" / "kept.parquet", kept)
            all_kept = _merge(all_kept, kept)
            self.log(f"round {r}: kept {len(kept):,} of {len(new):,} (threshold {verdict['threshold']:.3f} bits/char: "
                     + ", ".join(f"{a} {v['kept_fraction']:.2f}" for a, v in verdict["augmenters"].items()) + ")")
            if r == 1 and self.teacher_model is None and not s.teacher_hf:
                self.teacher_model = self.train_teacher(judge, kept)
            pools = self.build_pools(all_kept)
            if r == 1:
                weights = {p.name: float(len(p)) for p in pools}
                tot = sum(weights.values()) or 1.0
                weights = {k: round(v / tot, 4) for k, v in weights.items()}
            name = f"student-r{r}"
            self.ensure_kd()
            info = self.train_student(name, pools, weights, kd=self.kd_mode in ("live", "cached"))
            student = load_model(self.models / name)
            gains = dev_gains(self.student_cfg, student.params, self.dev, [self.real] + pools, self.pre.batch,
                              s.seed + r) if self.dev is not None else {}
            kept_frac = {a: v["kept_fraction"] for a, v in verdict["augmenters"].items()}
            for p in pools:  # augmenters not produced this round keep their last kept fraction
                kept_frac.setdefault(p.name, rounds[-1]["kept_fractions"].get(p.name, 0.0) if rounds else 0.0)
            rec = {"round": r, "seed": seed_r, "model": name, "new_variants": len(new), "kept_variants": len(kept),
                   "pool_variants": len(all_kept), "threshold_bits_per_char": verdict["threshold"],
                   "augmenters": verdict["augmenters"], "median_bits_per_char": verdict["median_bpc"],
                   "kept_fractions": kept_frac, "weights": weights,
                   "gains": {k: v for k, v in gains.items() if k != "real"}, "real_gain": gains.get("real"),
                   "next_weights": next_weights({p.name: kept_frac.get(p.name, 0.0) for p in pools}, gains),
                   "dev_bits_per_char": info["dev_bits_per_char"], "test_bits_per_char": info["test_bits_per_char"]}
            rec["improved"] = best_round is None or rec["dev_bits_per_char"] < best_round["dev_bits_per_char"]
            record_path.write_text(json.dumps(rec, indent=2) + "\n", encoding="utf-8")
            rounds.append(rec)
            weights = rec["next_weights"]
            if rec["improved"]:
                best_round = rec
            self.log(f"round {r}: student dev {rec['dev_bits_per_char']:.4f} bits/char"
                     + ("" if rec["improved"] else " (no better: stopping)"))
            if self._stop(rounds):
                break
        self.ensure_kd()

        # baselines
        best_pools = self.build_pools(_kept_until(self.run, best_round["round"]))
        best_weights = best_round["weights"]
        if not self.args.no_baselines:
            self.train_student("baseline", [], {}, kd=False)
            if self.kd_mode == "seq":
                aug_only = [p for p in best_pools if p.name != TEACHER_SAMPLE]
                seq_only = [p for p in best_pools if p.name == TEACHER_SAMPLE]
                self.train_student("student_no_kd", aug_only, best_weights, kd=False)
                self.train_student("student_no_aug", seq_only, {TEACHER_SAMPLE: 1.0}, kd=False)
            else:
                self.train_student("student_no_kd", best_pools, best_weights, kd=False)
                self.train_student("student_no_aug", [], {}, kd=True)
        if self.args.compare_tail:
            if self.top_k:
                other = "renorm" if s.tail == "bucket" else "bucket"
                self.train_student(f"student_{other}", best_pools, best_weights, kd=True, tail=other)
            else:
                self.log("--compare-tail: the teacher's full distribution is used (no top-k): no tail to compare")
        return self.report(rounds, best_round)

    def _stop(self, rounds: list[dict]) -> bool:
        return len(rounds) > 1 and not rounds[-1]["improved"]

    def report(self, rounds: list[dict], best_round: dict) -> dict[str, Any]:
        fields = distill_report.MODEL_FIELDS
        models: dict[str, dict] = {}
        curves: dict[str, list[Path]] = {}
        teacher = self.done("teacher")
        models["teacher"] = {k: teacher.get(k) for k in fields}
        curves["teacher"] = [self.models / "judge", self.models / "teacher"]
        student = self.done(best_round["model"])
        models["student"] = {k: student.get(k) for k in fields}
        curves["student"] = [self.models / best_round["model"]]
        extra = [p.name for p in sorted(self.models.glob("student_*")) if p.name.startswith(("student_renorm", "student_bucket"))]
        for name in ("baseline", "student_no_kd", "student_no_aug", *extra):
            d = self.done(name)
            if d:
                models[name] = {k: d.get(k) for k in fields}
                curves[name] = [self.models / name]
        for rec in rounds:
            if rec["model"] != best_round["model"]:
                curves[rec["model"]] = [self.models / rec["model"]]
        augmenters: dict[str, dict] = {}
        for rec in rounds:
            for a, v in rec["augmenters"].items():
                acc = augmenters.setdefault(a, {"variants": 0, "kept": 0})
                acc["variants"] += v["variants"]
                acc["kept"] += v["kept"]
        for a in augmenters.values():
            a["kept_fraction"] = round(a["kept"] / a["variants"], 4) if a["variants"] else 0.0
        base = models.get("baseline", {}).get("test_bits_per_char")
        report = {
            "corpus": self.snapshot.name, "version": self.snapshot.version, "preset": self.s.preset,
            "rounds": rounds, "models": models, "augmenters": augmenters,
            "best_round": best_round["round"],
            "student_over_baseline": round(models["student"]["test_bits_per_char"] / base, 4) if base else None,
            "teacher_source": self.s.teacher_hf or self.s.teacher or "trained here (teacher preset)",
            "teacher_logits": {"live": "computed in the student's step", "cached": f"top-{self.top_k} cache ({self.s.tail})",
                               "seq": "sequence-level (teacher samples)"}.get(self.kd_mode, "-"),
            "teacher_cache": self.cache.stats() if self.kd_mode == "cached" else None,
            "settings": asdict(self.s), "student_model": self.student_cfg.to_dict(),
            "wall_seconds": round(time.perf_counter() - self.t0, 1),
        }
        distill_report.write(self.run, report, curves)
        return report


def fit_params(cfg: ModelConfig, max_params: int | None) -> ModelConfig:
    """The widest SwiGLU hidden size (a multiple of 16, at most the preset's) within `max_params`."""
    if not max_params or cfg.n_params() <= max_params:
        return cfg
    hidden = cfg.hidden_dim
    while hidden > 16 and cfg.replace(hidden_dim=hidden).n_params() > max_params:
        hidden -= 16
    return cfg.replace(hidden_dim=hidden)


def _merge(a: list[dict], b: list[dict]) -> list[dict]:
    seen = {x["id"] for x in a}
    return a + [x for x in b if x["id"] not in seen]


def _kept_until(run: Path, last: int) -> list[dict]:
    out: list[dict] = []
    for r in range(1, last + 1):
        out = _merge(out, read_variants_file(run / "rounds" / f"r{r}" / "kept.parquet"))
    return out


def _augment_seed(snapshot: Snapshot) -> int:
    """The snapshot's [augment] seed (round 1's variants were made with it)."""
    stats = snapshot.augmented_dir() / "stats.json"
    try:
        return int(json.loads(stats.read_text(encoding="utf-8")).get("seed", 0))
    except (OSError, ValueError):
        return 0


def _run_speed(run: Path) -> tuple[float | None, float | None]:
    """(train seconds, tokens/s) of one of our runs: a distillation model's DONE.json, or an
    lm.train run's metrics and run.json."""
    done = run / DONE_FILE
    if done.is_file():
        info = json.loads(done.read_text(encoding="utf-8"))
        return info.get("train_seconds"), info.get("tokens_per_second")
    try:
        info = json.loads((run / "run.json").read_text(encoding="utf-8"))
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    except (OSError, ValueError):
        return None, None
    elapsed = max((x.get("elapsed", 0.0) for x in lines), default=0.0)
    steps = max((x.get("step", 0) for x in lines), default=0)
    tokens = steps * info["train"]["batch"] * info["model"]["context"]
    return (round(elapsed, 3), round(tokens / elapsed, 1)) if elapsed else (None, None)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parallel.use_cpu_cores()
    enable_compile_cache()
    report = Distiller(args).run_all()
    print(distill_report.models_table(report))
    print(f"\nreport: {Path(args.out) / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
