"""The loop: augment, judge, distil, for as many rounds as dev bits per character improves; then
every arm with the same number of paired seeds.

Arms: `lm.distill.arms.ARMS` (what each trains on, its loss, the flag that adds it); an arm
built here that the table lacks stops the run before it trains. Before a round's student
trains, each augmenter's dev gain is measured on the teacher and an augmenter whose gain is not
positive is dropped (`Rounds.screen`). Seed pair
i (`NAME-s{i}`, seed = --seed + i) gives every arm the same initial parameters and the same
order of real sequences (`lm.data.Batches`), so arm differences are paired. With one round,
round 1's student is `student-s0`; with more, rounds train `student-rN` to choose the mixture,
and every arm's seeds are trained fresh after it is fixed (the student is never the best of
several draws against a baseline drawn once).

How students get the teacher's soft targets is decided once, right after the teacher exists
(`KDPlan`): "live" (the teacher's forward inside the student's jitted step), "cached" (top-k from
`RUN/teacher-cache/` when `--cache always`, or `auto` and the students would read more teacher
tokens than the cache holds) or "seq" (a Hugging Face teacher with its own tokenizer: its samples
are the lesson). Each round ends in a `RoundRecord` (`RUN/rounds/rN/round.json`), read back on a
re-run.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from lm.data import Batches, Pool, noised_pool, pool_tokens, text_pool
from common.files import read_json, write_json
from lm.run import data_record
from lm.loader import FlaxModel, load_model
from lm.model import make_apply
from lm.trainer import Teacher

from lm.distill.arms import Arm, arm_info, size_weights, study_arms, trained
from lm.distill.config import DEFAULT_CACHE_K
from lm.distill.gain import dev_gains, next_weights
from lm.distill.judge import Judge, judge_round, real_scores
from lm.distill.ngram_teacher import NgramMix
from lm.distill.teacher_cache import TeacherCache, pays
from lm.distill.variants import (TEACHER_SAMPLE, augment_round, augment_seed, flax_sampler, merge,
                                 read_variants_file, sample_settings, teacher_samples, VARIANT_COLUMNS,
                                 write_variants)
from lm.distill.teachers import augmentation_free
from lm.distill.workspace import Workspace


def arm_model(arm: str, i: int) -> str:
    return f"{arm}-s{i}"


@dataclass(frozen=True)
class KDPlan:
    mode: str                   # "live", "cached" or "seq"
    top_k: int                  # 0: the teacher's full distribution
    teacher: Teacher | None     # what lm.trainer reads; None for "seq"
    cache: TeacherCache | None
    plain: Teacher | None = None  # the teacher alone, when `teacher` mixes in the n-gram

    def teacher_for(self, arm: Arm) -> Teacher | None:
        """The soft targets of a KD arm: the mixture, or the teacher alone (`student_no_ngram`)."""
        return self.teacher if arm.ngram or self.plain is None else self.plain

    @property
    def token_level(self) -> bool:
        return self.mode in ("live", "cached")

    def describe(self, tail: str) -> str:
        return {"live": "computed in the student's step", "cached": f"top-{self.top_k} cache ({tail})",
                "seq": "sequence-level (teacher samples)"}[self.mode]


def plan_kd(ws: Workspace, teacher: FlaxModel | None, students: int, context: int, pool_estimate: int,
            mix: NgramMix | None = None) -> KDPlan:
    """`students` models of `context` tokens will learn from `teacher` (None: --teacher-hf) on
    pools of about `pool_estimate` tokens; `mix`: the n-gram mixed in (a cache either way)."""
    s = ws.settings
    if s.teacher_hf:
        return KDPlan("seq", s.top_k or 0, None, None)
    if s.cache == "always" or mix or (s.cache == "auto" and pays(students, s.student_steps, s.batch, context,
                                                                 pool_estimate)):
        k = s.top_k or DEFAULT_CACHE_K
        teacher_id = f"{teacher.info.get('path')}@{teacher.info.get('checkpoint')}"
        caches = [TeacherCache(ws.run, teacher_id, k, s.temperature, make_apply(teacher.cfg), teacher.params, m)
                  for m in ((mix, None) if mix else (None,))]
        return KDPlan("cached", k, Teacher(cache=caches[0]), caches[0],
                      Teacher(cache=caches[1]) if mix else None)
    return KDPlan("live", s.top_k or 0, Teacher(cfg=teacher.cfg, params=teacher.params), None)


@dataclass(frozen=True)
class RoundRecord:
    """One round, as `RUN/rounds/rN/round.json` and the report's `rounds` hold it."""

    round: int
    seed: int                           # of this round's augmentation
    model: str                          # the round's student: models/student-rN (one round: student-s0)
    new_variants: int
    kept_variants: int
    pool_variants: int                  # kept variants of every round so far
    threshold_bits_per_char: float
    augmenters: dict[str, dict]         # this round's verdict per augmenter
    median_bits_per_char: dict[str, float]
    kept_fractions: dict[str, float]
    weights: dict[str, float]           # the mixture this round's student trained on
    gains: dict[str, float]             # dev gain per augmenter pool
    real_gain: float | None
    next_weights: dict[str, float]
    dev_bits_per_char: float
    test_bits_per_char: float
    improved: bool
    probe_gains: dict[str, float] = field(default_factory=dict)  # before the student: see `Rounds.screen`
    dropped: dict[str, str] = field(default_factory=dict)        # augmenter -> why it was left out

    @classmethod
    def read(cls, path: Path) -> "RoundRecord | None":
        return cls(**read_json(path)) if path.is_file() else None


@dataclass(frozen=True)
class Selection:
    """A round's new variants after judging: those kept and the verdict (`judge.judge_round`)."""

    new: list[dict]
    kept: list[dict]
    verdict: dict[str, Any]


class Rounds:
    """The rounds of one run: the cross-fitted judges, the teacher (a Flax model, or None with
    --teacher-hf, whose model `hf` samples), the student's shape, the real and dev text."""

    def __init__(self, ws: Workspace, judges: list[Judge], teacher: FlaxModel | None, hf: Any,
                 aug_rows: list[dict], noise_kinds: dict[str, str | None], mix: NgramMix | None = None):
        self.ws, self.judges, self.hf, self.aug_rows, self.noise_kinds = ws, judges, hf, aug_rows, noise_kinds
        self.student_cfg = ws.settings.student_model(ws.tok.vocab_size, teacher.context if teacher else None)
        ctx = self.student_cfg.context
        self.real, self.dev = ws.real(ctx), ws.dev(ctx)
        self.real_bpc = real_scores(ws, judges)
        self.teacher, self.mix = teacher, mix

    def round_model(self, r: int) -> str:
        return arm_model("student", 0) if self.ws.settings.rounds == 1 else f"student-r{r}"

    def path(self, r: int, name: str) -> Path:
        return self.ws.run / "rounds" / f"r{r}" / name

    def seed(self, r: int) -> int:
        return augment_seed(self.ws.snapshot) + (r - 1) * 1000 + self.ws.settings.seed

    # -- a round
    def select(self, r: int, weights: dict[str, float], kept_so_far: list[dict]) -> Selection:
        """The round's new variants (round 1: the snapshot's augmented set; later: pipelines.augment
        again with a new seed), plus the teacher's samples, judged."""
        new = list(self.aug_rows) if r == 1 else augment_round(self.ws.run, self.ws.snapshot, self.seed(r), weights)
        if r == 1 or weights.get(TEACHER_SAMPLE, 0.0) >= 0.05:
            new += self.teacher_samples(r)
        have = {x["id"] for x in kept_so_far}
        new = [x for x in new if x["id"] not in have]
        kept, verdict = judge_round(self.ws, r, new, self.judges, self.real_bpc)
        if not self.path(r, "kept.parquet").is_file():
            write_variants(self.path(r, "kept.parquet"), kept)
            self.ws.log(f"round {r}: kept {len(kept):,} of {len(new):,} (threshold {verdict['threshold']:.3f} "
                        "bits/char: " + ", ".join(f"{a} {v['kept_fraction']:.2f}"
                                                  for a, v in verdict["augmenters"].items()) + ")")
        return Selection(new, kept, verdict)

    def teacher_samples(self, r: int) -> list[dict]:
        """The round's teacher samples: a Hugging Face teacher's (temperature 1, its lesson), or our
        own teacher's with the spec's `[augment.teacher_sample]` (an augmenter for any language)."""
        ws, s = self.ws, self.ws.settings
        if self.hf is not None:
            tokens = s.sample_tokens
            return teacher_samples(ws, lambda p, seed, n: self.hf.sample(p, seed, max_new_tokens=n, temperature=1.0),
                                   r, self.seed(r), s.teacher_samples, tokens, {"temperature": 1.0})
        conf = sample_settings(ws.snapshot, s.own_teacher_samples, s.sample_tokens)
        if self.teacher is None or conf["samples"] == 0:
            return []
        t, p = conf.get("temperature", 0.8), conf.get("top_p", 0.95)
        return teacher_samples(ws, flax_sampler(self.teacher, t, p), r, self.seed(r), conf["samples"],
                               conf["max_tokens"], {"temperature": t, "top_p": p})

    def screen(self, r: int, pools: list[Pool]) -> tuple[dict[str, float], dict[str, str]]:
        """Each augmenter's dev gain before the round's student trains, measured on the teacher
        (trained on real text): the cosine between the dev gradient and the pool's
        (`gain.dev_gains`). An augmenter whose gain is not positive is dropped: a step on its text
        does not point down the dev loss. Returns (gains, dropped augmenter -> why)."""
        if self.dev is None or not pools or self.teacher is None:
            return {}, {}  # --teacher-hf: no Flax model trained on real text here to probe with
        gains = dev_gains(self.teacher.cfg, self.teacher.params, self.dev.packed, pools, self.ws.settings.batch,
                          self.ws.settings.seed + 100 + r)
        dropped = {a: f"dev gain {g:+.4f} <= 0 on the teacher" for a, g in gains.items() if g <= 0}
        for a, why in dropped.items():
            self.ws.log(f"round {r}: {a} dropped ({why})")
        return gains, dropped

    def distil(self, r: int, sel: Selection, kept: list[dict], weights: dict[str, float],
               last: RoundRecord | None, best: RoundRecord | None, plan: KDPlan) -> RoundRecord:
        """Train the round's student on real text plus every kept variant so far; measure the dev
        gain of each pool, which with the kept fractions sets the next round's weights."""
        ws = self.ws
        pools = self.build_pools(kept)
        probe_gains, dropped = self.screen(r, pools)
        pools = [p for p in pools if p.name not in dropped]
        if r == 1:
            weights = size_weights(pools)
        weights = {a: w for a, w in weights.items() if a not in dropped}
        name = self.round_model(r)
        rows = [x for x in kept if x["augmenter"] not in dropped]
        info = self.train_student(plan, name, Arm(rows, pools, weights, plan.token_level), seed=ws.settings.seed)
        student = load_model(ws.models / name)
        gains = dev_gains(self.student_cfg, student.params, self.dev.packed, [self.real] + pools, ws.settings.batch,
                          ws.settings.seed + r) if self.dev is not None else {}
        kept_frac = {a: v["kept_fraction"] for a, v in sel.verdict["augmenters"].items()}
        for p in pools:  # augmenters not produced this round keep their last kept fraction
            kept_frac.setdefault(p.name, last.kept_fractions.get(p.name, 0.0) if last else 0.0)
        dev_bpc = info["dev_bits_per_char"]
        rec = RoundRecord(
            round=r, seed=self.seed(r), model=name, new_variants=len(sel.new), kept_variants=len(sel.kept),
            pool_variants=len(kept), threshold_bits_per_char=sel.verdict["threshold"],
            augmenters=sel.verdict["augmenters"], median_bits_per_char=sel.verdict["median_bpc"],
            kept_fractions=kept_frac, weights=weights, gains={k: v for k, v in gains.items() if k != "real"},
            real_gain=gains.get("real"),
            next_weights=next_weights({p.name: kept_frac.get(p.name, 0.0) for p in pools}, gains),
            dev_bits_per_char=dev_bpc, test_bits_per_char=info["test_bits_per_char"],
            improved=best is None or dev_bpc < best.dev_bits_per_char, probe_gains=probe_gains, dropped=dropped)
        write_json(self.path(r, "round.json"), asdict(rec))
        ws.log(f"round {r}: student dev {dev_bpc:.4f} bits/char" + ("" if rec.improved else " (no better: stopping)"))
        return rec

    # -- the loop
    def run(self, options: set[str]) -> tuple[list[RoundRecord], RoundRecord, KDPlan, dict[str, str]]:
        """Every round (until dev stops improving), then every arm's seeds (`options`: the arm
        flags given, `arms.ARM_OPTIONS`); the rounds, the best, the plan and the arms refused
        (name -> why)."""
        ws, s = self.ws, self.ws.settings
        first = self.select(1, {}, [])
        students = (s.rounds if s.rounds > 1 else 0) + s.seeds * sum(a.kd for a in trained(options))
        # the pools' size, estimated before judging: real text and every variant
        n_train = len(ws.snapshot.records("train"))
        estimate = pool_tokens([self.real]) * (1 + len(self.aug_rows) / max(1, n_train))
        plan = plan_kd(ws, self.teacher, students, self.student_cfg.context, int(estimate), self.mix)

        rounds: list[RoundRecord] = []
        kept: list[dict] = []
        weights: dict[str, float] = {}
        best: RoundRecord | None = None
        for r in range(1, s.rounds + 1):
            rec = RoundRecord.read(self.path(r, "round.json"))
            if rec is not None:
                kept = merge(kept, read_variants_file(self.path(r, "kept.parquet")))
            else:
                sel = first if r == 1 else self.select(r, weights, kept)
                kept = merge(kept, sel.kept)
                rec = self.distil(r, sel, kept, weights, rounds[-1] if rounds else None, best, plan)
            rounds.append(rec)
            weights = rec.next_weights
            if best is None or rec.dev_bits_per_char < best.dev_bits_per_char:
                best = rec
            if len(rounds) > 1 and not rec.improved:
                break
        refused = self.arms(plan, best, options)
        return rounds, best, plan, refused

    def arms(self, plan: KDPlan, best: RoundRecord, options: set[str]) -> dict[str, str]:
        """Every arm the flags `options` ask for (`arms.ARMS`), `--seeds` paired seeds each, on the
        best round's mixture; returns the arms refused and why (`student_no_aug` when the teacher
        may have seen augmented text)."""
        ws, s = self.ws, self.ws.settings
        kept = self.kept_until(best.round)
        used = [a for a in {x["augmenter"] for x in kept} if a not in best.dropped]
        rows = [x for x in kept if x["augmenter"] in used]
        pools, weights = self.build_pools(rows), best.weights
        arms = {"student": Arm(rows, pools, weights, plan.token_level), "baseline": Arm([], [], {}, False)}
        refused: dict[str, str] = {}
        if {"ablations", "study_arms"} & options:
            lesson = [x for x in rows if x["augmenter"] == TEACHER_SAMPLE]
            plain = [x for x in rows if x["augmenter"] != TEACHER_SAMPLE]
            arms["student_no_kd"] = Arm(plain, [p for p in pools if p.name != TEACHER_SAMPLE], weights, False)
            if plan.mode == "seq":  # a Hugging Face teacher teaches by its samples
                arms["student_no_aug"] = Arm(lesson, [p for p in pools if p.name == TEACHER_SAMPLE],
                                             {TEACHER_SAMPLE: 1.0}, False)
            elif (why := augmentation_free(ws)) is None:
                arms["student_no_aug"] = Arm([], [], {}, True)
            else:
                refused["student_no_aug"] = why
                ws.log(f"student_no_aug refused: {why}; it would not be augmentation-free")
        if "ablations" in options and plan.plain:
            arms["student_no_ngram"] = Arm(rows, pools, weights, True, ngram=False)
        if "study_arms" in options:
            arms.update(study_arms(self.judged_until(best.round), kept, used, weights, self.build_pools, s.seed))
        if "compare_tail" in options:
            if plan.top_k:
                other = "renorm" if s.tail == "bucket" else "bucket"
                arms[f"student_{other}"] = Arm(rows, pools, weights, True, other)
            else:
                ws.log("--compare-tail: the teacher's full distribution is used (no top-k): no tail to compare")
        for name in arms:  # `ARMS` is what help and report say: an arm it lacks or adds otherwise stops here
            if (flags := arm_info(name).options) and options.isdisjoint(flags):
                raise AssertionError(f"arm {name} trained without {flags}, the flags `ARMS` gives it")
        for i in range(s.seeds):  # pair by pair: an interrupted run has whole pairs
            for name, arm in arms.items():
                self.train_student(plan, arm_model(name, i), arm, seed=s.seed + i)
        return refused

    # -- students
    def kept_until(self, last: int) -> list[dict]:
        out: list[dict] = []
        for r in range(1, last + 1):
            out = merge(out, read_variants_file(self.path(r, "kept.parquet")))
        return out

    def judged_until(self, last: int) -> list[dict]:
        """Every variant judged in rounds 1..`last` (kept or not)."""
        out: list[dict] = []
        for r in range(1, last + 1):
            out = merge(out, [{c: x[c] for c in VARIANT_COLUMNS}
                              for x in pq.read_table(self.path(r, "judged.parquet")).to_pylist()])
        return out

    def build_pools(self, kept: list[dict]) -> list[Pool]:
        """One pool per augmenter; noise ones noised-input (clean parents as targets) when asked."""
        ws, noised = self.ws, self.ws.settings.noised_input
        by_aug: dict[str, list[dict]] = {}
        for r in kept:
            by_aug.setdefault(r["augmenter"], []).append(r)
        parents = {r["id"]: r["text"] for r in ws.snapshot.records("train")} if noised else {}
        ctx, sep = self.student_cfg.context, ws.snapshot.separator
        pools = []
        for name, rows in sorted(by_aug.items()):
            if noised and self.noise_kinds.get(name) == "noise":
                pairs = [(parents[r["parent_id"]], r["text"]) for r in rows if r["parent_id"] in parents]
                pools.append(noised_pool(name, ws.tok, pairs, ctx, sep))
            else:
                pools.append(text_pool(name, ws.tok, [r["text"] for r in rows], ctx, sep))
        return pools

    def train_student(self, plan: KDPlan, name: str, arm: Arm, seed: int) -> dict[str, Any]:
        """A student (or baseline): the same shape, steps and schedule for every one; `seed` sets
        its initial parameters and the order of its real sequences; the arm's variants are
        recorded in its run.json."""
        ws, s = self.ws, self.ws.settings
        info = ws.done(name)
        if info:
            return info
        pools, weights, kd = arm.pools, arm.weights, arm.kd
        loss = s.loss(kd, arm.tail, top_k=plan.top_k)
        data = Batches(self.real, s.batch, seed, pools, weights, s.aug_share if pools else 0.0)
        names = [p.name for p in pools]
        ws.log(f"{name}: at most {s.student_steps} steps, {'KD (' + plan.mode + ')' if kd else 'CE'}, "
               f"real + {', '.join(names) or 'nothing else'}")
        aug = [r for r in arm.rows if r["augmenter"] in names]
        summary = ws.train(name, self.student_cfg, ws.schedule(name, s.student_steps, s.student_lr), data,
                           self.dev, seed=seed, loss=loss, teacher=plan.teacher_for(arm) if kd else None,
                           data_used=data_record(ws.snapshot, ["train"], None, aug),
                           describe={"pools": names, "weights": weights, "kd": kd,
                                     "ngram": kd and arm.ngram and plan.plain is not None})
        model = load_model(ws.models / name)
        return ws.mark_done(name, {"params": self.student_cfg.n_params(), **ws.evaluate(model), "seed": seed,
                                   **summary.timing(), "pools": names, "weights": weights, "kd": kd})
