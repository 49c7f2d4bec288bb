"""Benchmark: the whole distillation loop (`python -m lm.distill --preset demo`) on gl-ctg and
tinyshakespeare, with its ablations.

`.venv/bin/python bench/distill.py` (from the project root). Writes bench/results/distill.json and
the "Distillation" section of bench/README.md.

1. Builds each corpus from ../shared/data with `pipelines.build` and augments it with
   `pipelines.augment` (their specs' own `[augment]` tables), under bench/work/distill/.
2. Runs `python -m lm.distill --corpus ... --preset demo` and times the whole command (imports,
   tokenizer, teacher, judging, the student, the three baselines, every evaluation): the demo must
   fit in 15 minutes on 2 CPU cores for gl-ctg. The compilation cache is cleared first, so the
   time includes compiling. Then runs it again with `--compare-tail`, which resumes and trains one
   more student: the other treatment of the teacher's mass outside its top-k tokens.
3. Tabulates, per corpus, every model's parameters, dev and test bits per character (test in
   nats per character too, for nanoGPT's 1.88 on tinyshakespeare), training time and speed, the
   augmenters' kept fractions, the rounds, and the two requirements on gl-ctg test
   (student < baseline, teacher < student) and the aims (student <= 0.95 x baseline on gl-ctg;
   a student of at most 0.80M parameters below 1.88 nats/char on tinyshakespeare).

The README section's prose is in bench/templates/distill.md and distill_corpus.md; `--readme`
rewrites the section from results/distill.json without running anything.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import (quiet_note, fmt, load_1m, machine, md_row, parser, read_results, readme_only, render,  # noqa: E402
                          timed_command, update_readme, write_results)

WORK = ROOT / "bench" / "work" / "distill"
RESULTS = ROOT / "bench" / "results" / "distill.json"
SECTION = "## Distillation (bench/distill.py)"
MIRROR = ROOT.parent / "shared" / "data"
PY = sys.executable
CORPORA = ("gl-ctg", "tinyshakespeare")
DEMO_BUDGET_S = 15 * 60
NANOGPT_NATS = 1.88
MODELS = ("teacher", "student", "baseline", "student_no_kd", "student_no_aug")


def snapshot(name: str) -> Path:
    out = WORK / "corpora"
    corpus = out / name
    if not (corpus / "LATEST").is_file():
        timed_command([PY, "-m", "pipelines.build", f"corpora/{name}.toml", "--out", str(out), "--mirror", str(MIRROR)],
                      WORK / f"build-{name}.log")
    version = (corpus / "LATEST").read_text().strip()
    if not (corpus / version / "augmented" / "stats.json").is_file():
        timed_command([PY, "-m", "pipelines.augment", str(corpus)], WORK / f"augment-{name}.log")
    return corpus


def distil(name: str, corpus: Path, fresh: bool) -> dict[str, Any]:
    out = WORK / "runs" / name
    if fresh:
        shutil.rmtree(out, ignore_errors=True)
    cache = WORK / "cache"
    shutil.rmtree(cache, ignore_errors=True)  # time the demo as a first run: compilation included
    env = {**os.environ, "SCARCE_LM_CACHE": str(cache)}
    load = load_1m()
    cmd = [PY, "-m", "lm.distill", "--corpus", str(corpus), "--out", str(out), "--preset", "demo", "--quiet"]
    wall = 0.0
    # the demo as `make demo` runs it (timed), then the same command again with --compare-tail:
    # it resumes, finds everything done, and trains only the extra student
    for extra, log in (([], f"distill-{name}.log"), (["--compare-tail"], f"distill-{name}-tail.log")):
        seconds, _ = timed_command(cmd + extra, WORK / log, env=env)
        wall = wall or seconds
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    report["settings"]["corpus"] = os.path.relpath(report["settings"]["corpus"], ROOT)  # no machine paths
    done = {p.parent.name: json.loads(p.read_text()) for p in (out / "models").glob("*/DONE.json")}
    best = report["rounds"][report["best_round"] - 1]["model"]
    for m, info in report["models"].items():
        src = done.get(best if m == "student" else m, {})
        info["test_nats_per_char"] = src.get("test_nats_per_char")
    return {"wall_s": round(wall, 1), "load_avg_1m": [load, load_1m()], "report": report}


def checks(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    gl = results.get("gl-ctg")
    if gl:
        m = gl["report"]["models"]
        s, b, t = (m[k]["test_bits_per_char"] for k in ("student", "baseline", "teacher"))
        out["gl-ctg"] = {"student_below_baseline": s < b, "teacher_below_student": t < s,
                         "student_over_baseline": round(s / b, 4), "aim_0.95": s <= 0.95 * b,
                         "demo_within_15_min": gl["wall_s"] <= DEMO_BUDGET_S}
    ts = results.get("tinyshakespeare")
    if ts:
        st = ts["report"]["models"]["student"]
        out["tinyshakespeare"] = {"student_params": st["params"], "student_test_nats_per_char": st["test_nats_per_char"],
                                  "aim_below_1.88_at_0.80M": st["params"] <= 800_000 and st["test_nats_per_char"] < NANOGPT_NATS}
    return out


def num(v: Any, digits: int = 4) -> str:
    """A table cell: "-" for missing, floats without thousands separators."""
    return fmt(v, digits, none="-", group="")


def corpus_tables(name: str, r: dict[str, Any]) -> str:
    rep = r["report"]
    models = rep["models"]
    base = models["baseline"]["test_bits_per_char"]
    rows = []
    for m in list(MODELS) + sorted(set(models) - set(MODELS)):
        x = models[m]
        rows.append(md_row(f"{m} (order {x['order']})" if "order" in x else m, num(x["params"]), num(x["dev_bits_per_char"]), num(x["test_bits_per_char"]),
                           num(x.get("test_nats_per_char")), f"{x['test_bits_per_char'] / base:.3f}",
                           num(x["train_seconds"], 1), num(x["tokens_per_second"], 0)))
    augs = [md_row(a, f"{v['variants']:,}", f"{v['kept']:,}", f"{v['kept_fraction']:.3f}")
            for a, v in sorted(rep["augmenters"].items())]
    rounds = [md_row(x["round"], f"{x['new_variants']:,}", f"{x['kept_variants']:,}",
                     f"{x['threshold_bits_per_char']:.3f}",
                     ", ".join(f"{k} {v:.2f}" for k, v in sorted(x["weights"].items())),
                     ", ".join(f"{k} {v:+.3f}" for k, v in sorted(x["gains"].items())),
                     f"{x['dev_bits_per_char']:.4f}")
              for x in rep["rounds"]]
    cache = rep.get("teacher_cache") or {}
    cache_note = f", {cache.get('rows_filled', 0):,} sequences cached, {cache.get('bytes', 0) / 1e6:.0f} MB" if cache else ""
    return render("distill_corpus", name=name, r=r, rep=rep, st=rep["student_model"], cache_note=cache_note,
                  quiet=quiet_note(r["load_avg_1m"][0]),
                  models="\n".join(rows), augmenters="\n".join(augs), rounds="\n".join(rounds))


def ablations(runs: dict[str, Any]) -> str:
    """What the ablations show in this run, per corpus, from the reports (one seed per model)."""
    lines = []
    for name, r in runs.items():
        m, aug = r["report"]["models"], r["report"]["augmenters"]
        test = {k: v["test_bits_per_char"] for k, v in m.items()}

        def rel(a: str, b: str) -> str:
            d = test[a] / test[b] - 1
            return f"{abs(d) * 100:.1f}% {'above' if d > 0 else 'below'} `{b}`"

        kept = ", ".join(f"{a} {v['kept_fraction']:.0%}" for a, v in sorted(aug.items()))
        lines.append(f"- {name}, test bits/char: `student_no_aug` is {rel('student_no_aug', 'student')}, "
                     f"`student_no_kd` {rel('student_no_kd', 'baseline')}, `student` "
                     f"{rel('student', 'baseline')}; the judge kept {kept} of the variants.")
    lines.append("- One seed per model, at the demo's budget (250 student steps): differences smaller than the "
                 "spread between seeds, which this benchmark does not measure, are not decided here.")
    return "\n".join(lines)


def readme_section(res: dict[str, Any]) -> str:
    c = res["checks"]
    gl, ts = c.get("gl-ctg", {}), c.get("tinyshakespeare", {})
    s = res["runs"]["gl-ctg"]["report"]["settings"] if "gl-ctg" in res["runs"] else {}
    check_rows = []
    if gl:
        check_rows += [md_row("gl-ctg test: student < baseline (required)", num(gl["student_below_baseline"])),
                       md_row("gl-ctg test: teacher < student (required)", num(gl["teacher_below_student"])),
                       md_row("gl-ctg test: student <= 0.95 x baseline (aim)",
                              f"{num(gl['aim_0.95'])} ({gl['student_over_baseline']:.3f})"),
                       md_row("gl-ctg demo in at most 15 minutes",
                              f"{num(gl['demo_within_15_min'])} ({res['runs']['gl-ctg']['wall_s']:.0f} s)")]
    if ts:
        check_rows.append(md_row("tinyshakespeare: student <= 0.80M params below 1.88 nats/char (aim)",
                                 f"{num(ts['aim_below_1.88_at_0.80M'])} ({ts['student_params']:,} params, "
                                 f"{num(ts['student_test_nats_per_char'])} nats/char)"))
    return render("distill", title=SECTION, m=res["machine"],
                  s={k: s.get(k) for k in ("alpha", "kl", "temperature", "keep_quantile")},
                  checks="\n".join(check_rows), tables="\n".join(corpus_tables(n, r) for n, r in res["runs"].items()),
                  ablations=ablations(res["runs"]))


def main(argv: list[str] | None = None) -> int:
    p = parser("distillation benchmark (demo preset on gl-ctg and tinyshakespeare)")
    p.add_argument("--only", choices=CORPORA, help="run one corpus, keeping the other from results/distill.json")
    p.add_argument("--keep", action="store_true", help="resume the runs in bench/work/distill instead of starting afresh")
    args = p.parse_args(argv)
    if readme_only(args.readme, SECTION, RESULTS, readme_section):
        return 0
    WORK.mkdir(parents=True, exist_ok=True)
    old = read_results(RESULTS) if args.only and RESULTS.exists() else {}
    runs = dict(old.get("runs", {}))
    for name in CORPORA:
        if args.only and name != args.only:
            continue
        runs[name] = distil(name, snapshot(name), fresh=not args.keep)
        print(f"{name}: {runs[name]['wall_s']:.0f} s", flush=True)
    res = {"machine": machine(), "runs": runs}
    res["checks"] = checks(runs)
    write_results(RESULTS, res)
    update_readme(SECTION, readme_section(res))
    print(json.dumps(res["checks"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
