"""Benchmark: the small search that sets the demo's student learning rate and dropout, on dev.

`.venv/bin/python bench/tune.py` (from the project root, after bench/distill.py). Writes
bench/results/tune.json and the "Choosing the student's learning rate and dropout" section of
bench/README.md.

Every point of `GRID` runs `python -m lm.distill --preset demo --seeds 1` on gl-ctg with the
teacher of bench/distill.py's gl-ctg run (`--teacher`, so it is not trained again) and the
point's `--student-lr` and `--student-dropout`: the two n-gram judges, one student and one baseline
(seed 0), each with the demo's steps and early stopping. The same search serves both arms: each
picks the point with its lowest dev bits per character (never test; test is shown, not used).
A point whose run finished is read back (lm.distill resumes), so a re-run only re-tabulates.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import (load_1m, machine, md_row, parser, read_results, readme_only, render,  # noqa: E402
                          timed_command, publish)
from lm.distill.config import PRESETS  # noqa: E402

WORK = ROOT / "bench" / "work" / "tune"
RESULTS = ROOT / "bench" / "results" / "tune.json"
SECTION = "## Choosing the student's learning rate and dropout (bench/tune.py)"
DISTILL = ROOT / "bench" / "work" / "distill"
DISTILL_RESULTS = ROOT / "bench" / "results" / "distill.json"  # the demo figures this search serves
PY = sys.executable
GRID = ((2e-3, 0.0), (3e-3, 0.0), (5e-3, 0.0), (3e-3, 0.1))
ARMS = ("student", "baseline")


def point(lr: float, dropout: float, corpus: Path, teacher: Path) -> dict[str, Any]:
    out = WORK / f"lr{lr:g}-dropout{dropout:g}"
    cmd = [PY, "-m", "lm.distill", "--corpus", str(corpus), "--out", str(out), "--preset", "demo", "--seeds", "1",
           "--teacher", str(teacher), "--student-lr", str(lr), "--student-dropout", str(dropout), "--quiet"]
    timed_command(cmd, WORK / f"{out.name}.log")
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    arms = {a: {k: report["models"][a][k] for k in ("dev_bits_per_char", "test_bits_per_char")}
            | {"best_step": report["models"][a]["per_seed"][0]["best_step"]} for a in ARMS}
    return {"lr": lr, "dropout": dropout, "teacher_logits": report["teacher_logits"], "arms": arms,
            "corpus_version": report.get("version")}


def choose(points: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per arm, the point with the lowest dev bits per character."""
    out = {}
    for a in ARMS:
        best = min(points, key=lambda p: p["arms"][a]["dev_bits_per_char"])
        out[a] = {"lr": best["lr"], "dropout": best["dropout"], "dev_bits_per_char": best["arms"][a]["dev_bits_per_char"]}
    return out


def readme_section(res: dict[str, Any]) -> str:
    chosen = choose(res["points"])  # recomputed from the points (dev), not read from the stored choice
    rows = []
    for p in res["points"]:
        cells = [f"{p['lr']:g}", f"{p['dropout']:g}"]
        for a in ARMS:
            x = p["arms"][a]
            mark = " (chosen)" if (chosen[a]["lr"], chosen[a]["dropout"]) == (p["lr"], p["dropout"]) else ""
            cells += [f"{x['dev_bits_per_char']:.4f}{mark}", f"{x['test_bits_per_char']:.4f}", x["best_step"]]
        rows.append(md_row(*cells))
    c, demo = chosen, res["demo"]
    lines = []
    for a in ARMS:
        at_demo = next((p["arms"][a]["dev_bits_per_char"] for p in res["points"]
                        if (p["lr"], p["dropout"]) == (demo["lr"], demo["dropout"])), None)
        gap = f"{at_demo - c[a]['dev_bits_per_char']:.4f}" if at_demo is not None else "-"
        lines.append(f"- `{a}` chooses lr {c[a]['lr']:g}, dropout {c[a]['dropout']:g}; at the demo's setting "
                     f"(lr {demo['lr']:g}, dropout {demo['dropout']:g}) its dev bits/char is {gap} higher.")
    if (c["baseline"]["lr"], c["baseline"]["dropout"]) == (demo["lr"], demo["dropout"]):
        lines.append("- The demo's one setting for every arm is the baseline's own choice: the baseline is compared "
                     "at its best.")
    modes = sorted({p["teacher_logits"] for p in res["points"]})
    distill = read_results(DISTILL_RESULTS) if DISTILL_RESULTS.exists() else {}
    demo_logits = (((distill.get("runs") or {}).get("gl-ctg") or {}).get("report") or {}).get("teacher_logits")
    lines.append(f"- Teacher logits in these runs: {', '.join(modes)} (`--cache auto` with one student); the demo "
                 f"(results/distill.json, gl-ctg): {demo_logits or 'not recorded'}.")
    verdict = "\n".join(lines)
    return render("tune", title=SECTION, m=res["machine"], rows="\n".join(rows), verdict=verdict,
                  load=res["load_avg_1m"], teacher=res["teacher"], stale=staleness(res))


def staleness(res: dict[str, Any]) -> str:
    """Whether these points ran on the gl-ctg snapshot that results/distill.json reports (compared
    by corpus version, as each file recorded it): if not, or if unknown, the choice is stale."""
    ours = sorted({str(p["corpus_version"]) for p in res["points"] if p.get("corpus_version")})
    demo = read_results(DISTILL_RESULTS) if DISTILL_RESULTS.exists() else {}
    theirs = ((demo.get("runs") or {}).get("gl-ctg") or {}).get("report", {}).get("version")
    if ours and theirs and ours == [theirs]:
        return f"These points ran on gl-ctg version {theirs}, the version results/distill.json reports: current."
    where = f"gl-ctg version {theirs}" if theirs else "a gl-ctg version it does not record"
    if not ours:
        return (f"**Stale until rerun**: results/tune.json does not record the corpus version its points ran on, "
                f"so they cannot be matched to results/distill.json ({where}); rerun bench/tune.py after "
                "bench/distill.py before relying on the choice.")
    return (f"**Stale**: these points ran on gl-ctg version {', '.join(ours)}, results/distill.json reports "
            f"{where}; rerun bench/tune.py after bench/distill.py before relying on the choice.")


def main(argv: list[str] | None = None) -> int:
    args = parser("the demo's student learning rate and dropout, chosen on dev").parse_args(argv)
    if readme_only(args.readme, SECTION, RESULTS, readme_section):
        return 0
    corpus = DISTILL / "corpora" / "gl-ctg"
    teacher = DISTILL / "runs" / "gl-ctg" / "models" / "teacher"
    if not (teacher / "DONE.json").is_file():
        print(f"bench/tune.py: no teacher at {teacher}: run bench/distill.py first", file=sys.stderr)
        return 2
    WORK.mkdir(parents=True, exist_ok=True)
    load = load_1m()
    points = [point(lr, d, corpus, teacher) for lr, d in GRID]
    demo = PRESETS["demo"].defaults()
    res = {"machine": machine(), "load_avg_1m": [load, load_1m()], "teacher": str(teacher.relative_to(ROOT)),
           "grid": [list(g) for g in GRID], "points": points, "chosen": choose(points),
           "demo": {"lr": demo.student_lr, "dropout": demo.student_dropout}}
    publish(RESULTS, SECTION, res, readme_section)
    print(json.dumps(res["chosen"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
