"""The command line of `python -m lm.distill` (see `lm.distill`): options, then the stages in order."""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import Field, asdict
from pathlib import Path
from typing import Any, get_args, get_type_hints

from common.lock import RunLock
from lm import parallel
from lm.corpus import augmenter_kinds, open_snapshot
from lm.errors import DataError, run_cli
from lm.ngram import anchor

from lm.distill import report as distill_report, samples, teachers
from lm.distill.arms import ARM_OPTIONS, arms_epilog
from lm.distill.config import PRESETS, Settings, flag, options, resolve_settings
from lm.distill.judge import train_judges
from lm.distill.ngram_teacher import teacher_mix
from lm.distill.rounds import Rounds, arm_model
from lm.distill.variants import ensure_augmented, read_variants
from lm.distill.workspace import Workspace, check_teacher, check_teacher_hf, run_tokenizer

DESCRIPTION = "`python -m lm.distill --corpus OUT/NAME --out RUN [options]`: augmentation plus distillation."


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def build_parser(cls: type = Settings) -> argparse.ArgumentParser:
    """The command's own arguments, then one option per option field of `cls` (`config.option`),
    then one flag per group of optional arms (`arms.ARMS`, listed after the options)."""
    p = argparse.ArgumentParser(prog="python -m lm.distill", description=DESCRIPTION, epilog=arms_epilog(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", required=True, help="OUT/NAME (follows LATEST) or a version folder")
    p.add_argument("--out", required=True, help="run folder (re-run the same command to resume)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="demo", help="sizes, steps, rounds (demo)")
    hints, groups = get_type_hints(cls), {}
    for f in options(cls):
        m, kind = f.metadata, hints[f.name]
        if m["exclusive"] and m["exclusive"] not in groups:
            groups[m["exclusive"]] = p.add_mutually_exclusive_group()
        where = groups[m["exclusive"]] if m["exclusive"] else p
        kind = next((t for t in get_args(kind) if t is not type(None)), kind)  # X | None: X
        extra = {"action": argparse.BooleanOptionalAction} if kind is bool else {"type": kind}
        where.add_argument(flag(f.name), default=None, choices=m["choices"], help=m["help"] + defaults_text(f),
                           **extra)
    for name, help in ARM_OPTIONS.items():
        p.add_argument(flag(name), action="store_true", help=help)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def defaults_text(f: Field) -> str:
    """The end of an option's help: its default, per preset where they differ; nothing for None."""
    values = {n: pre.values.get(f.name, f.metadata["default"]) for n, pre in PRESETS.items()}
    shown = {n: ("on" if v else "off") if isinstance(v, bool) else str(v) for n, v in values.items()}
    if len(set(shown.values())) == 1:
        return "" if None in values.values() else f" (default: {next(iter(shown.values()))})"
    return " (default: " + ", ".join(f"{n} {v}" for n, v in shown.items()) + ")"


def given_options(args: argparse.Namespace, cls: type = Settings) -> dict[str, Any]:
    """The options set on the command line (field -> value)."""
    return {f.name: getattr(args, f.name) for f in options(cls) if getattr(args, f.name) is not None}


def distill(args: argparse.Namespace) -> dict[str, Any]:
    """Every stage of the loop in `args.out`; returns the report."""
    t0 = time.perf_counter()
    run = Path(args.out)
    snapshot = open_snapshot(args.corpus)
    s = resolve_settings(args.preset, given_options(args), snapshot, run)
    aug_dir = ensure_augmented(snapshot)
    aug_rows = read_variants(aug_dir)
    if not aug_rows:
        raise DataError(f"no augmented variants in {aug_dir}")
    tok = run_tokenizer(run, s, snapshot)
    ws = Workspace(run, snapshot, s, tok, args.quiet, t0)
    ws.log(f"{snapshot.name} {snapshot.version}: {len(aug_rows):,} augmented variants, "
           f"tokenizer {tok.vocab_size} pieces")

    judges = train_judges(ws)  # cross-fitted: they judge; the teacher teaches
    if s.teacher or s.teacher_hf:
        given = teachers.external_teacher(ws)
        teacher, hf = (None, given) if s.teacher_hf else (given, None)
    else:
        teacher, hf = teachers.train_teacher(ws), None
    mix = teacher_mix(ws, teacher)
    loop = Rounds(ws, judges, teacher, hf, aug_rows, augmenter_kinds(aug_dir), mix)
    rounds, best, plan, refused = loop.run({o for o in ARM_OPTIONS if getattr(args, o)})

    ngram = anchor(str(snapshot.root))
    ws.log(f"character n-gram anchor: order {ngram['order']} (chosen on dev), test {ngram['test_bits_per_char']:.4f} bits/char")
    report, curves = distill_report.assemble(
        ws.models, [asdict(r) for r in rounds], asdict(best), ngram, corpus=snapshot.name, version=snapshot.version,
        preset=s.preset, teacher_source=s.teacher_hf or s.teacher or "trained here (teacher preset)",
        teacher_logits=plan.describe(s.tail), teacher_cache=plan.cache.stats() if plan.cache else None,
        teacher_data=(ws.done("teacher") or {}).get("data"), refused=refused,
        judges={j.name: j.describe(real) for j, real in zip(judges, loop.real_bpc)},
        **reader_samples(ws, ngram["order"]), settings=s.stored(), student_model=loop.student_cfg.to_dict(),
        wall_seconds=round(time.perf_counter() - t0, 1))
    distill_report.write(run, report, curves)
    return report


def reader_samples(ws: Workspace, order: int) -> dict[str, Any]:
    """The report's samples: the student's, the n-gram's of the same prompts, their readability."""
    name = arm_model("student", 0)
    student = samples.model_samples(ws, name)
    ngram = samples.ngram_samples(ws, order, student)
    return {"samples": student, "samples_model": name, "samples_temperature": samples.SAMPLE_TEMPERATURE,
            "ngram_samples": ngram, "readability": samples.readability(ws, student, ngram)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.teacher:  # before the run folder, the augmentation and the judges: a bad one costs nothing
        check_teacher(Path(args.teacher))
    if args.teacher_hf:
        check_teacher_hf(Path(args.teacher_hf))
    parallel.start_command()
    with RunLock(args.out):  # one command per run folder: a second exits 75 (common.lock)
        report = distill(args)
    print(distill_report.models_table(report))
    print(f"\nreport: {Path(args.out) / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
