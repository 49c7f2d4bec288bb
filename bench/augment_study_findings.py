"""Reading bench/augment_study.py's results: what the numbers say, and the README section.

Per arm, the ratio of its dev bits per character to the baseline's, seed pair by seed pair, with
a 95% t-interval (computed when the rows are collected, `bench.augment_study.rows_of`); here the
verdicts, the paired differences between arms (`lm.distill.paired.paired_difference`), the aims and
what they say of the loop's defaults, all read on dev (choose on dev), with the same figures on
test beside them for display only (report on test); and the "Augmentation where data is the
limit" section of bench/README.md rendered from them. Nothing here trains or runs a command.

The study's plan and the arms' labels live here too: the README says which planned entries ran.
"""
from __future__ import annotations

from typing import Any

from bench.common import ROOT, fmt, md_row, ngram_method, render
from lm.distill.paired import paired_difference

SECTION = "## Augmentation where data is the limit (bench/augment_study.py)"
# (corpus, fraction of train, every arm?): every arm where data is scarcest, the main ones elsewhere
PLAN = (("gl-ctg", 0.25, True), ("gl-ctg", 0.5, False), ("gl-ctg", 1.0, False), ("tinyshakespeare", 0.25, False))
LABELS = {"baseline": "baseline (real text, CE)", "student_no_kd": "+ augmentation, judged (no teacher)",
          "aug_random": "+ augmentation, random filter at the judge's kept fraction",
          "aug_unfiltered": "+ augmentation, unfiltered", "student_no_aug": "KD (real text)",
          "student": "KD + augmentation", "aug-backtranslate": "+ back-translation alone",
          "aug-synonyms": "+ synonyms alone", "aug-noise": "+ noise alone (noised input)",
          "aug-teacher-sample": "+ teacher samples alone"}

# Choose on dev, report on test: every ratio, interval, verdict, aim and default below reads dev;
# the test figures are carried beside them for display only.
DECIDE, SHOW = "dev", "test"
AIM_AUG = 0.97  # real + augmented text without a teacher, at most this ratio to the baseline


def figures(row: dict[str, Any], split: str) -> dict[str, Any] | None:
    """A row's figures on `split`, or None when not recorded: rows written before dev was
    recorded carry test alone, at the top level."""
    if split in row:
        return row[split]
    if split == "test" and "per_seed" in row:
        return {k: row[k] for k in ("mean", "ratio_to_baseline", "ci95", "per_seed")}
    return None



def cells(x: dict[str, Any] | None) -> list[str]:
    """One split's table cells: mean bits/char, ratio to the baseline, its interval."""
    if x is None:
        return ["not recorded"] * 3
    ci = f"[{x['ci95'][0]:.3f}, {x['ci95'][1]:.3f}]" if x["ci95"] else "-"
    return [f"{x['mean']:.4f}", f"{x['ratio_to_baseline']:.3f}", ci]


def table(res: dict[str, Any]) -> str:
    """The arms' table: dev (with the verdict it gives) first, test beside it for display."""
    lines = []
    for r in res["rows"]:
        dev = figures(r, DECIDE)
        said = "-" if r["arm"] == "baseline" else verdict(dev["ci95"]) if dev else "no dev figure"
        steps = ", ".join(f"{b}/{s}" for b, s in zip(r["best_steps"], r["steps"]))
        lines.append(md_row(r["corpus"], f"{r['fraction']:.0%}", LABELS.get(r["arm"], r["arm"]), r["seeds"],
                            *cells(dev), said, *cells(figures(r, SHOW)), steps))
    return "\n".join(lines)


# the paired differences the findings state: (arm a, arm b), read a - b seed pair by seed pair
PAIRS = {"kd_aug_minus_kd": ("student", "student_no_aug"), "judged_minus_random": ("student_no_kd", "aug_random"),
         "judged_minus_unfiltered": ("student_no_kd", "aug_unfiltered")}
FILTERS = ("student_no_kd", "aug_random", "aug_unfiltered")
# the setting where every arm ran: the loop's defaults are read there
EVERY_ARM = next((c, f) for c, f, every in PLAN if every)


def ratio_on(row: dict[str, Any], split: str) -> dict[str, Any] | None:
    x = figures(row, split)
    return None if x is None else {"mean": x["ratio_to_baseline"], "ci95": x["ci95"], "verdict": verdict(x["ci95"])}


def pair_on(arms: dict[str, Any], a: str, b: str, split: str) -> dict[str, Any] | None:
    """a - b on `split`, seed pair by seed pair; None when an arm did not run or lacks the split."""
    x, y = (figures(arms[k], split) if k in arms else None for k in (a, b))
    if not x or not y:
        return None
    n = min(len(x["per_seed"]), len(y["per_seed"]))
    d = paired_difference(x["per_seed"][:n], y["per_seed"][:n])
    return {"seeds": d["seeds"], "mean": d["mean"], "ci95": d["ci95"]}


def on_split(arms: dict[str, Any], split: str) -> dict[str, Any]:
    """Every arm's ratio to the baseline and the paired differences, on one split."""
    return {"ratio": {a: ratio_on(r, split) for a, r in arms.items() if a != "baseline"},
            **{k: pair_on(arms, a, b, split) for k, (a, b) in PAIRS.items()}}


def aims(dev: dict[str, Any]) -> dict[str, bool | None]:
    """The study's aims, read on dev (None: no dev figure)."""
    aug, kd = dev["ratio"].get("student_no_kd"), dev["kd_aug_minus_kd"]
    return {"aug_at_most_0.97": None if aug is None else aug["mean"] <= AIM_AUG and aug["verdict"] == "helps",
            "kd_aug_below_kd": None if kd is None else bool(kd["ci95"] and kd["ci95"][1] < 0)}


def findings(res: dict[str, Any]) -> dict[str, Any]:
    """The verdicts the README states, computed from the rows on dev (`DECIDE`), with the same
    figures on test (`SHOW`) beside them for display; then what they say of the loop's defaults."""
    per = []
    for run in res["runs"]:
        c, f = run["corpus"], run["fraction"]
        arms = {r["arm"]: r for r in res["rows"] if (r["corpus"], r["fraction"]) == (c, f)}
        dev = on_split(arms, DECIDE)
        per.append({"corpus": c, "fraction": f, "decided_on": DECIDE, DECIDE: dev, SHOW: on_split(arms, SHOW),
                    "aims": aims(dev),
                    "dropped_by_the_loop": sorted(a for a, v in run["augmenters"].items() if v.get("dropped"))})
    return {"per_setting": per, "defaults": defaults(per)}


def defaults(per: list[dict[str, Any]]) -> dict[str, Any]:
    """What dev says of the loop's defaults at the every-arm setting: a judge filter only if it
    beats both a random filter at its kept fraction and none; an augmenter left out only if alone
    it hurts."""
    s = next((x for x in per if (x["corpus"], x["fraction"]) == EVERY_ARM), None)
    if s is None:
        return {}
    dev = s[DECIDE]
    beats = [None if p is None else bool(p["ci95"] and p["ci95"][1] < 0)
             for p in (dev["judged_minus_random"], dev["judged_minus_unfiltered"])]
    keep = ("no dev figure" if None in beats else "contradicts" if all(beats) else "supports" if not any(beats)
            else "mixed")

    def left_out(arm: str) -> str:
        r = dev["ratio"].get(arm)
        return ("no dev figure" if r is None else
                {"hurts": "supports", "helps": "contradicts"}.get(r["verdict"], "does not decide"))
    return {"corpus": s["corpus"], "fraction": s["fraction"], "read_on": DECIDE, "keep_quantile_1": keep,
            "no_synonyms": left_out("aug-synonyms"), "no_own_teacher_samples": left_out("aug-teacher-sample")}


def verdict(ci: list[float] | None) -> str:
    """A ratio's 95% interval: below 1 helps, above 1 hurts, else not decided."""
    if not ci:
        return "one seed"
    return "helps" if ci[1] < 1 else "hurts" if ci[0] > 1 else "not decided"


def difference(p: dict[str, Any] | None) -> str:
    if not p:
        return "not recorded"
    ci = f", 95% CI [{p['ci95'][0]:+.4f}, {p['ci95'][1]:+.4f}]" if p["ci95"] else ""
    return f"{p['mean']:+.4f} bits/char{ci}"


def ratio_text(v: dict[str, Any] | None, said: bool = True) -> str:
    """"0.9837 [0.966, 1.001] (not decided)"; the verdict only where it is drawn (dev)."""
    if v is None:
        return "not recorded"
    ci = f" [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]" if v["ci95"] else ""
    return f"{v['mean']:.4f}{ci}" + (f" ({v['verdict']})" if said else "")


def setting_lines(s: dict[str, Any]) -> list[str]:
    """A setting's findings: dev decides, test follows for display, no verdict drawn from it."""
    dev, test = s[DECIDE], s[SHOW]
    judged = test["judged_minus_random"] is not None or dev["judged_minus_random"] is not None

    def diffs(x: dict[str, Any]) -> str:
        return (f"KD + augmentation - KD: {difference(x['kd_aug_minus_kd'])}"
                + (f"; judged - random filter: {difference(x['judged_minus_random'])}; judged - unfiltered: "
                   f"{difference(x['judged_minus_unfiltered'])}" if judged else ""))
    dropped = (f" Dropped by the loop's dev-gain screen: {', '.join(s['dropped_by_the_loop'])}."
               if s["dropped_by_the_loop"] else "")
    if all(v is None for v in dev["ratio"].values()) and all(dev[k] is None for k in PAIRS):
        said = "not recorded, so no verdict."
    else:
        said = ("ratio to the baseline: " + "; ".join(f"{LABELS.get(a, a)} {ratio_text(v)}" for a, v in dev["ratio"].items())
                + f". {diffs(dev)}.")
    return [f"- **{s['corpus']} at {s['fraction']:.0%}**, on dev (decides): {said}{dropped}",
            "  On test (display only; no verdict is drawn from it): ratio to the baseline: "
            + "; ".join(f"{LABELS.get(a, a)} {ratio_text(v, said=False)}" for a, v in test["ratio"].items())
            + f". {diffs(test)}."]


def yes_no(v: bool | None, yes: str = "yes", no: str = "no") -> str:
    return "not recorded" if v is None else yes if v else no


def aim_lines(f: dict[str, Any]) -> list[str]:
    """The aims and the dev-gain screen at the every-arm setting, all read on dev."""
    s = next((x for x in f["per_setting"] if (x["corpus"], x["fraction"]) == EVERY_ARM), None)
    if s is None:
        return []
    dev, where = s[DECIDE], f"{s['corpus']} {s['fraction']:.0%}"
    ran = [a for a in FILTERS if dev["ratio"].get(a)]
    best = min(ran, key=lambda a: dev["ratio"][a]["mean"]) if ran else None  # chosen on dev
    best_text = f"{LABELS[best]}, {ratio_text(dev['ratio'][best])}" if best else "not recorded"
    judged = dev["ratio"].get("student_no_kd")
    judged_text = yes_no(s["aims"]["aug_at_most_0.97"], "met", "not met") + (
        f" ({ratio_text(judged, said=False)})" if judged else "")
    lines = [f"- Aim, {where}, on dev: real + augmented text without a teacher at most {AIM_AUG} x the baseline "
             f"with the interval below 1: judged {judged_text}; the best filtering on dev: {best_text}. "
             "KD + augmentation below KD alone on dev: "
             + ", ".join(f"{x['corpus']} {x['fraction']:.0%} {yes_no(x['aims']['kd_aug_below_kd'])}"
                         for x in f["per_setting"]) + "."]
    dropped = ", ".join(s["dropped_by_the_loop"]) or "nothing"
    alone = {a: v for a, v in dev["ratio"].items() if a.startswith("aug-")}
    hurt = [a for a, v in alone.items() if v and v["verdict"] == "hurts"]
    if alone and all(v is None for v in alone.values()):
        lines.append(f"- The loop's dev-gain screen dropped {dropped} at {where}; whether the augmenters alone "
                     "hurt on dev is not recorded.")
    elif hurt and not set(s["dropped_by_the_loop"]) >= {a[4:] for a in hurt}:
        lines.append(f"- The loop's dev-gain screen (gradient cosine on the teacher) dropped {dropped} at {where}, "
                     f"while alone {', '.join(LABELS[a] for a in hurt)} hurt on dev: a positive gain there does "
                     "not predict a positive effect.")
    else:
        lines.append(f"- The loop's dev-gain screen dropped {dropped} at {where}.")
    return lines


BACKS = {"supports": "dev backs it", "contradicts": "**dev contradicts it**", "mixed": "dev is mixed",
         "does not decide": "dev does not decide, so dev does not back it", "no dev figure": "no dev figure backs it"}


def product_defaults() -> dict[str, Any]:
    """The defaults as the code has them now (`lm.distill`'s demo preset, gl-ctg's spec): what
    the study's verdicts bear on."""
    import tomllib
    from lm.distill.config import PRESETS
    demo = PRESETS["demo"].defaults()
    spec = tomllib.loads((ROOT / "corpora" / "gl-ctg.toml").read_text(encoding="utf-8"))
    steps = [x.get("augmenter", "?") for x in spec.get("augment", {}).get("steps", [])]
    return {"keep_quantile": demo.keep_quantile, "own_teacher_samples": demo.own_teacher_samples, "gl_ctg_steps": steps}


def defaults_lines(f: dict[str, Any]) -> str:
    """"What the loop's defaults take from it", computed: each default, the dev figures it rests
    on and whether dev backs it."""
    d = f.get("defaults")
    if not d:
        return "The setting where every arm ran is not in these results: no default is read from them."
    s = next(x for x in f["per_setting"] if (x["corpus"], x["fraction"]) == (d["corpus"], d["fraction"]))
    dev, now = s[DECIDE], product_defaults()
    steps = ", ".join(now["gl_ctg_steps"]) or "none"
    lines = [f"**What the loop's defaults take from it** (read on dev at {d['corpus']} {d['fraction']:.0%}, where "
             "every arm ran; the defaults as the code has them now):", "",
             f"- `--keep-quantile` {now['keep_quantile']} (the demo preset's default): judged - random filter on dev "
             f"{difference(dev['judged_minus_random'])}; judged - unfiltered on dev "
             f"{difference(dev['judged_minus_unfiltered'])}: {BACKS[d['keep_quantile_1']]} (a stricter filter is "
             "backed only if the judged arm beats both).",
             f"- gl-ctg's spec runs {steps} ({'no' if 'synonyms' not in now['gl_ctg_steps'] else 'a'} synonym step): "
             f"synonyms alone on dev {ratio_text(dev['ratio'].get('aug-synonyms'))}: {BACKS[d['no_synonyms']]}.",
             f"- our own teacher's samples per round: {now['own_teacher_samples']} unless a spec's "
             "`[augment.teacher_sample]` asks: teacher samples alone on dev "
             f"{ratio_text(dev['ratio'].get('aug-teacher-sample'))}: {BACKS[d['no_own_teacher_samples']]}."]
    if "no dev figure" in d.values():
        lines += ["", "**No per-seed dev figure is recorded for the arms in results/augment_study.json** (it was "
                  "written before the study kept dev), so no default above is backed by a dev verdict: the verdicts "
                  "that set them were read on test, shown here for display only. Rerun the study before relying on "
                  "them."]
    return "\n".join(lines)


def agreed(res: dict[str, Any], *path: str) -> str:
    """One recorded setting over the runs: its value, "a / b" where runs differ, or "not recorded"."""
    vals = []
    for run in res["runs"]:
        v: Any = run.get("settings")
        for k in path:
            v = v.get(k) if isinstance(v, dict) else None
        if v is not None:
            vals.append(f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v))
    return " / ".join(dict.fromkeys(vals)) or "not recorded"


def settings_text(res: dict[str, Any]) -> str:
    """The study preset's settings as the runs recorded them (older results: not recorded)."""
    if not any(r.get("settings") for r in res["runs"]):
        return ("`--preset study`; its settings (the student's size, the step budget, the batch, the dev "
                "evaluation interval and patience, the augmented share, the judges' keep quantile) were not "
                "recorded in results/augment_study.json")
    return (f"`--preset {agreed(res, 'preset')}`: a student of {agreed(res, 'student_params')} parameters, at most "
            f"{agreed(res, 'student_steps')} steps of {agreed(res, 'preset_only', 'batch')} x "
            f"{agreed(res, 'student_model', 'context')} tokens, a dev evaluation every "
            f"{agreed(res, 'preset_only', 'eval_every')} steps, stopping after {agreed(res, 'preset_only', 'patience')} "
            f"without a new best; a share {agreed(res, 'aug_share')} of each batch augmented; the judges keep "
            f"variants no worse than their {agreed(res, 'keep_quantile')} quantile of real sentences")


def teacher_text(res: dict[str, Any]) -> str:
    params = ", ".join(dict.fromkeys(f"{r['teacher']['params']:,}" for r in res["runs"] if r.get("teacher")))
    count = agreed(res, "preset_only", "own_teacher_samples")
    return (f"samples of the run's own real-text teacher ({params or 'not recorded'} parameters; samples asked "
            f"per run: {count}) continuing real train prefixes")


def dropout_text(res: dict[str, Any]) -> str:
    """The dropout search, from its recorded dev figures."""
    d = res.get("dropout_dev") or {}
    if not d:
        return "The students' dropout search is not in these results."
    values = ", ".join(dict.fromkeys(k for v in d.values() for k in v["dev_bits_per_char"]))
    per = "; ".join(f"{c} (at {v['fraction']:.0%}): {v['chosen']} (dev bits/char "
                    + ", ".join(f"{k}: {x:.4f}" for k, x in v["dev_bits_per_char"].items()) + ")" for c, v in d.items())
    return (f"Student dropout was chosen on dev per corpus at its smallest share among {values} (`lm.train`, real "
            f"text, the same shape and schedule), then used by every arm of that corpus: {per}.")


def caveats(res: dict[str, Any]) -> str:
    """"Read with care", computed: repetition of small pools, schedule-bound settings, and
    augmenters that kept almost nothing."""
    parts = [f"each arm puts the same share of augmented sequences in every epoch (`aug_share` "
             f"{agreed(res, 'aug_share')}), so a small pool (the runs table's counts) is repeated many times more "
             "than a large one, and its harm may be repetition as much as the augmenter"]
    bound: dict[int, list[str]] = {}  # schedule length -> the settings it bounds
    for run in res["runs"]:
        rows = [r for r in res["rows"] if (r["corpus"], r["fraction"]) == (run["corpus"], run["fraction"])]
        if rows and all(b == s for r in rows for b, s in zip(r["best_steps"], r["steps"])):
            bound.setdefault(max(s for r in rows for s in r["steps"]), []).append(f"{run['corpus']} {run['fraction']:.0%}")
    parts += [f"at {' and '.join(w)} every model's best step is its last, so those figures are bound by the "
              f"{steps}-step schedule" for steps, w in bound.items()]
    for run in res["runs"]:
        ts = run["augmenters"].get("teacher-sample")
        if ts and ts["kept"] < 0.1 * ts["variants"]:
            parts.append(f"at {run['corpus']} {run['fraction']:.0%} the teacher-sample augmenter kept {ts['kept']} of "
                         f"{ts['variants']} variants, so there it played almost no part")
    return "; ".join(parts) + "."


def runs_table(res: dict[str, Any]) -> str:
    return "\n".join(
        md_row(r["corpus"], f"{r['fraction']:.0%}", f"{r['train_records']:,}", f"{r['train_chars']:,}", r["dropout"],
               f"{ngram_method(r['ngram'])}, order {r['ngram'].get('order', '?')}",
               f"{r['ngram']['test_bits_per_char']:.4f}", fmt((r.get('teacher') or {}).get('test_bits_per_char'), 4),
               "; ".join(f"{a} {v['kept']}/{v['variants']}, {fmt(v.get('dev_gain'), 3, none='-')}"
                         + (" (dropped)" if v.get("dropped") else "") for a, v in sorted(r["augmenters"].items())))
        for r in res["runs"])


def readme_section(res: dict[str, Any]) -> str:
    f = findings(res)
    lines = [x for s in f["per_setting"] for x in setting_lines(s)] + aim_lines(f)
    ran = {(r["corpus"], r["fraction"]) for r in res["runs"]}
    shares = ", ".join(f"{c} {f:.0%}{' (every arm)' if every else ''}" for c, f, every in PLAN if (c, f) in ran)
    missing = [f"{c} {f:.0%} (`--entries {i}`)" for i, (c, f, _) in enumerate(PLAN) if (c, f) not in ran]
    missing_note = (f"Planned but not run in these results: {', '.join(missing)}." if missing else "")
    no_dev = any(figures(r, DECIDE) is None for r in res["rows"])
    dev_note = ("**These results record no per-seed dev figure for the arms** (they were written before the study "
                "kept dev): every dev cell reads \"not recorded\" and no verdict is drawn." if no_dev else "")
    seeds = ", ".join(dict.fromkeys(str(r["seeds"]) for r in res["rows"]))
    augmenters = ", ".join(dict.fromkeys(a for r in res["runs"] for a in sorted(r["augmenters"])))
    return render("augment_study", title=SECTION, m=res["machine"], table=table(res), runs=runs_table(res),
                  findings="\n".join(lines), defaults=defaults_lines(f), dropout=dropout_text(res), shares=shares,
                  missing=missing_note, settings=settings_text(res), teacher=teacher_text(res), seeds=seeds,
                  augmenters=augmenters, dev_note=dev_note, caveats=caveats(res))
