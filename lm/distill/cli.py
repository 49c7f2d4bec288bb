"""The command line of `python -m lm.distill` (see `lm.distill`): options, then the stages in order."""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from lm import parallel
from lm.corpus import augmenter_kinds, open_snapshot
from lm.errors import DataError, run_cli
from lm.generate import generate
from lm.loader import load_model
from lm.ngram import anchor

from lm.distill import report as distill_report, teachers
from lm.distill.config import DEFAULT_CACHE_K, GIVEN, PRESETS, resolve_settings
from lm.distill.judge import train_judges
from lm.distill.rounds import Rounds, arm_model
from lm.distill.variants import ensure_augmented, read_variants
from lm.distill.workspace import Workspace, run_tokenizer

DESCRIPTION = "`python -m lm.distill --corpus OUT/NAME --out RUN [options]`: augmentation plus distillation."


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lm.distill", description=DESCRIPTION)
    p.add_argument("--corpus", required=True, help="OUT/NAME (follows LATEST) or a version folder")
    p.add_argument("--out", required=True, help="run folder (re-run the same command to resume)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="demo", help="sizes, steps, rounds (demo)")
    t = p.add_mutually_exclusive_group()
    t.add_argument("--teacher", help="a run folder of ours to use as the teacher (its tokenizer is adopted)")
    t.add_argument("--teacher-hf", help="a local Hugging Face causal LM folder (safetensors): sequence-level distillation")
    p.add_argument("--rounds", type=int, help="augment-judge-distil rounds (stops early without dev gain)")
    p.add_argument("--seeds", type=int, help="paired seeds per arm (demo: 3); may grow on a re-run")
    p.add_argument("--alpha", type=float, help="weight of cross-entropy; 1 - alpha on the KL term (0.2)")
    p.add_argument("--temperature", type=float, help="softmax temperature of the KL term (1.0)")
    p.add_argument("--kl", choices=("forward", "reverse"), help="KL(teacher || student) or the reverse")
    p.add_argument("--top-k", type=int, help=f"KL on the teacher's top K tokens (default: all; {DEFAULT_CACHE_K} when cached)")
    p.add_argument("--tail", choices=("bucket", "renorm"), help="top-k: keep the missing mass as a bucket, or renormalise")
    p.add_argument("--cache", choices=("auto", "always", "never"), help="top-k teacher cache (auto: when it pays)")
    p.add_argument("--keep-quantile", type=float, help="drop variants worse than this quantile of real sentences (1.0: only those worse than all)")
    p.add_argument("--aug-share", type=float, help="share of training sequences from augmented text")
    p.add_argument("--noised-input", action=argparse.BooleanOptionalAction, default=None,
                   help="noise variants as student input with their clean parents as targets (default: on)")
    p.add_argument("--seed", type=int)
    p.add_argument("--student-steps", type=int, help="override the preset")
    p.add_argument("--judge-steps", type=int, help="override the preset")
    p.add_argument("--teacher-steps", type=int, help="override the preset")
    p.add_argument("--student-lr", type=float, help="peak learning rate of every student (override the preset)")
    p.add_argument("--student-dropout", type=float, help="dropout of every student and baseline (override the preset)")
    p.add_argument("--ablations", action="store_true",
                   help="also train student_no_kd (augmented, CE) and student_no_aug (real, KD), every seed")
    p.add_argument("--study-arms", action="store_true",
                   help="also train aug_random, aug_unfiltered and aug-NAME per augmenter (CE, every seed; "
                        "bench/augment_study.py)")
    p.add_argument("--compare-tail", action="store_true",
                   help="also train the student with the other top-k tail (student_renorm or student_bucket)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def distill(args: argparse.Namespace) -> dict[str, Any]:
    """Every stage of the loop in `args.out`; returns the report."""
    t0 = time.perf_counter()
    run = Path(args.out)
    snapshot = open_snapshot(args.corpus)
    given = {k: getattr(args, k) for k in GIVEN if getattr(args, k) is not None}
    s = resolve_settings(args.preset, given, snapshot, run)
    pre = s.preset_values()
    aug_dir = ensure_augmented(snapshot)
    aug_rows = read_variants(aug_dir)
    if not aug_rows:
        raise DataError(f"no augmented variants in {aug_dir}")
    tok = run_tokenizer(run, s, pre, snapshot, [r["text"] for r in aug_rows])
    ws = Workspace(run, snapshot, s, pre, tok, args.quiet, t0)
    ws.log(f"{snapshot.name} {snapshot.version}: {len(aug_rows):,} augmented variants, "
           f"tokenizer {tok.vocab_size} pieces")

    judges = train_judges(ws)  # cross-fitted: they judge; the teacher teaches
    if s.teacher or s.teacher_hf:
        given = teachers.external_teacher(ws)
        teacher, hf = (None, given) if s.teacher_hf else (given, None)
    else:
        teacher, hf = teachers.train_teacher(ws), None
    loop = Rounds(ws, judges, teacher, hf, aug_rows, augmenter_kinds(aug_dir))
    rounds, best, plan, refused = loop.run(args.ablations, args.compare_tail, args.study_arms)

    ngram = anchor(str(snapshot.root))
    ws.log(f"character n-gram anchor: order {ngram['order']} (chosen on dev), test {ngram['test_bits_per_char']:.4f} bits/char")
    report, curves = distill_report.assemble(
        ws.models, [asdict(r) for r in rounds], asdict(best), ngram, corpus=snapshot.name, version=snapshot.version,
        preset=s.preset, teacher_source=s.teacher_hf or s.teacher or "trained here (teacher preset)",
        teacher_logits=plan.describe(s.tail), teacher_cache=plan.cache.stats() if plan.cache else None,
        teacher_data=(ws.done("teacher") or {}).get("data"), refused=refused,
        judges={j.name: {"records": len(j.info["data"]["records"]), "params": j.model.cfg.n_params(),
                         "best_step": (ws.done(j.name) or {}).get("best_step")} for j in judges},
        samples=samples(ws, arm_model("student", 0)), samples_model=arm_model("student", 0),
        samples_temperature=SAMPLE_TEMPERATURE, settings=asdict(s), student_model=loop.student_cfg.to_dict(),
        wall_seconds=round(time.perf_counter() - t0, 1))
    distill_report.write(run, report, curves)
    return report


SAMPLE_TEMPERATURE = 0.8


def samples(ws: Workspace, name: str, n: int = 4, words: int = 4, tokens: int = 60) -> list[dict[str, str]]:
    """A few continuations by model `name` of the first words of seeded dev sentences, for a reader."""
    recs = [r for r in ws.snapshot.records("dev") if len(r["text"].split(" ")) > words + 3]
    if not recs:
        return []
    model = load_model(ws.models / name)
    out = []
    for k, i in enumerate(np.random.default_rng([ws.settings.seed, 23]).permutation(len(recs))[:n]):
        prompt = " ".join(recs[i]["text"].split(" ")[:words]) + " "
        text = generate(model, prompt, max_tokens=tokens, temperature=SAMPLE_TEMPERATURE, seed=ws.settings.seed + k)
        out.append({"prompt": prompt, "continuation": text})
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parallel.start_command()
    report = distill(args)
    print(distill_report.models_table(report))
    print(f"\nreport: {Path(args.out) / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
