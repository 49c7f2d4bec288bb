"""The distillation report: `report.json`, `report.md` (the same as tables) and two PNG plots.

`report.json` = {"corpus", "version", "preset", "rounds": [...], "models": {NAME: {"params",
"dev_bits_per_char", "test_bits_per_char", "train_seconds", "tokens_per_second"}}, "paired":
{"A_vs_B": {"seeds", "mean", "sd", "ci95", "differences"}}, "augmenters": {NAME: {"variants",
"kept", "kept_fraction"}}} plus a few extra keys (settings, teacher cache, samples, wall time,
and `judges`: per cross-fitted Kneser-Ney judge its method, order, records counted, dev bits per
character and median bits per character on its real sample). An arm trained with several seeds
(`student`, `baseline`, ...) reports the means over its seeds, with `dev_sd`, `test_sd`, `seeds`
and `per_seed`; `ngram` is the character n-gram anchor (with its `method` and `order`). Plots:
`dev_bpc.png` (dev bits per character against step: the teacher and every arm's first seed, from
each model's metrics.jsonl) and `kept_fraction.png`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common.files import write_json
from lm.run import read_done

from lm.distill.arms import ARMS, arm_info
from lm.distill.paired import attribution, paired_difference, sentence, spread

MIX_MODEL = "teacher_ngram"  # the teacher's soft targets with the n-gram mixed in (`ngram_teacher`)
HEAD_ROWS = ("ngram", "teacher", MIX_MODEL)  # then the arms, as `arms.ARMS` lists them
MODEL_FIELDS = ("params", "dev_bits_per_char", "test_bits_per_char", "train_seconds", "tokens_per_second")
NGRAM_LABELS = {"modified-kneser-ney": "modified KN", "witten-bell": "Witten-Bell"}  # `lm.ngram`'s methods


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def models_table(report: dict[str, Any]) -> str:
    """Means over seeds for the arms, with the seeds' standard deviation of test bits/char."""
    models = report["models"]
    names = sorted(models, key=row_order)
    base = (models.get("baseline") or {}).get("test_bits_per_char")
    ngram = (models.get("ngram") or {}).get("test_bits_per_char")
    lines = ["| model | params | dev bits/char | test bits/char | test sd (seeds) | test / n-gram | test / baseline "
             "| train s | tokens/s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n in names:
        m = models[n]
        test = m.get("test_bits_per_char")
        label = row_label(n, m)
        sd = f"{_fmt(m['test_sd'])} ({m['seeds']})" if m.get("test_sd") is not None else "-"
        lines.append(f"| {label} | {_fmt(m['params'])} | {_fmt(m['dev_bits_per_char'])} | {_fmt(test)} | {sd} | "
                     f"{_fmt(test / ngram if ngram and test else None, 3)} | "
                     f"{_fmt(test / base if base and test else None, 3)} | {_fmt(m['train_seconds'], 1)} | "
                     f"{_fmt(m['tokens_per_second'], 0)} |")
    return "\n".join(lines)


def row_label(name: str, m: dict[str, Any]) -> str:
    """The n-gram's row says which n-gram: "n-gram (modified KN, order 12)"; the mixture's, its
    order and weight."""
    if name == MIX_MODEL:
        return f"teacher + token n-gram (order {m['order']}, teacher weight {m['teacher_weight']})"
    if "order" not in m:
        return name
    method = m.get("method")
    if not method:  # a report from before `lm.ngram` had methods
        return f"{name} (order {m['order']})"
    return f"n-gram ({NGRAM_LABELS.get(method, method)}, order {m['order']})"


def row_order(name: str) -> tuple[int, str]:
    """The models table's order: the n-gram anchor, the teacher, then the arms as `ARMS` lists them."""
    if name in HEAD_ROWS:
        return HEAD_ROWS.index(name), name
    try:
        return len(HEAD_ROWS) + ARMS.index(arm_info(name)), name
    except KeyError:
        return len(HEAD_ROWS) + len(ARMS), name


def arms_legend(models: dict[str, Any]) -> list[str]:
    """A line per kind of arm in the table: its loss and what it trains on (`ARMS`)."""
    present = set()
    for name in models:
        try:
            present.add(arm_info(name).name)
        except KeyError:
            continue
    return [f"- `{a.name}`: {a.loss} on {a.data}" for a in ARMS if a.name in present]


def augmenters_table(report: dict[str, Any]) -> str:
    lines = ["| augmenter | variants | kept | kept fraction | dev gain (teacher) | in the student's mixture |",
             "|---|---:|---:|---:|---:|---|"]
    for name, a in sorted(report["augmenters"].items()):
        gain = a.get("dev_gain")
        lines.append(f"| {name} | {a['variants']:,} | {a['kept']:,} | {a['kept_fraction']:.3f} | "
                     f"{'-' if gain is None else f'{gain:+.4f}'} | {'dropped: ' + a['dropped'] if a.get('dropped') else 'yes'} |")
    return "\n".join(lines)


def rounds_table(report: dict[str, Any]) -> str:
    lines = ["| round | seed | new variants | kept | threshold bits/char | mixture weights | dev gains | student dev bits/char | student test bits/char |",
             "|---:|---:|---:|---:|---:|---|---|---:|---:|"]
    for r in report["rounds"]:
        w = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r["weights"].items()))
        g = ", ".join(f"{k} {v:+.3f}" for k, v in sorted(r.get("gains", {}).items()))
        lines.append(f"| {r['round']} | {r['seed']} | {r['new_variants']:,} | {r['kept_variants']:,} | "
                     f"{_fmt(r['threshold_bits_per_char'])} | {w} | {g} | {_fmt(r['dev_bits_per_char'])} | "
                     f"{_fmt(r['test_bits_per_char'])} |")
    return "\n".join(lines)


def sample_line(n: int, sample: dict[str, str]) -> str:
    """A numbered Markdown line: the prompt in bold, then the continuation; line breaks as " / "."""
    prompt, cont = (sample[k].replace("\n", " / ") for k in ("prompt", "continuation"))
    return f"{n}. **{prompt.strip()}** {cont.strip()}"


def judges_text(judges: dict[str, Any]) -> str:
    """The report's words for the judges (`judge.Judge.describe`): "cross-fitted Kneser-Ney
    judges: judge-a order O on R records, median M bits/char on the other half's sample; ..."."""
    parts = [f"{name} order {j['order']} on {j['records']:,} records, median "
             f"{_fmt(j.get('real_median_bits_per_char'), 3)} bits/char on the other half's sample"
             for name, j in sorted(judges.items())]
    return "cross-fitted Kneser-Ney judges" + (": " + "; ".join(parts) if parts else "")


def readability_line(r: dict[str, Any]) -> str:
    """Words of the samples found in train or dev, beside real test sentences' (the ceiling)."""
    def part(name: str, x: dict[str, Any]) -> str:
        share = f"{100 * x['share']:.1f}%" if x.get("share") is not None else "-"
        return f"{name} {share} of {x['words']} words"
    names = {"student": "the student", "ngram": "the n-gram", "real_test": "real test sentences"}
    return "Words found in train or dev: " + ", ".join(part(n, r[k]) for k, n in names.items() if k in r) + "."


def markdown(report: dict[str, Any]) -> str:
    s = report.get("settings", {})
    head = (f"# Distillation report: {report['corpus']} {report['version']} (preset {report['preset']})\n\n"
            f"Teacher: {report.get('teacher_source', 'trained here')}. Loss: alpha {s.get('alpha')} x CE + "
            f"(1 - alpha) x T^2 x KL ({s.get('kl')}), T = {s.get('temperature')}; keep quantile "
            f"{s.get('keep_quantile')} ({judges_text(report.get('judges', {}))}); teacher logits: "
            f"{report.get('teacher_logits', '-')}. "
            f"Bits per character as `lm.evaluate` (sliding windows, stride context/2) on real dev and test text; "
            f"an arm's figures are means over its paired seeds. Wall time {report.get('wall_seconds', 0):.0f} s.\n")
    paired = [f"- {sentence(k, v)} (test)" for k, v in report.get("paired", {}).items()]
    paired += [f"- {x}" for x in report.get("attribution", []) + report.get("convergence", [])]
    refused = [f"- {k} not trained: {v}" for k, v in report.get("refused", {}).items()]
    refused += [f"- augmenter {k} dropped from the student's mixture: {a['dropped']}"
                for k, a in sorted(report.get("augmenters", {}).items()) if a.get("dropped")]
    samples = [sample_line(i + 1, x) for i, x in enumerate(report.get("samples", []))]
    parts = [head, "## Models\n", models_table(report), "", *arms_legend(report["models"]), "", *paired, *refused, ""]
    if samples:
        parts += [f"## Samples from {report.get('samples_model', 'the student')} (dev prompts, temperature "
                  f"{report.get('samples_temperature')})\n", *samples, ""]
    ngram_samples = [sample_line(i + 1, x) for i, x in enumerate(report.get("ngram_samples", []))]
    if ngram_samples:
        parts += ["## Samples from the n-gram anchor (the same prompts and lengths)\n", *ngram_samples, ""]
    if report.get("readability"):
        parts += [readability_line(report["readability"]), ""]
    return "\n".join(parts + ["## Augmenters (all rounds)\n", augmenters_table(report), "", "## Rounds\n",
                                rounds_table(report), "", "![dev bits per character](dev_bpc.png)\n",
                                "![kept fraction](kept_fraction.png)\n"])


def _curve(model_dir: Path) -> list[tuple[int, float]]:
    path = model_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if "dev_bpc" in entry:
            out.append((entry["step"], entry["dev_bpc"]))
    return out


def plot(run: Path, curves: dict[str, list[Path]], report: dict[str, Any]) -> None:
    """curves: model name -> its phase folders in order (steps of later phases continue the count)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, dirs in curves.items():
        xs, ys, offset = [], [], 0
        for d in dirs:
            pts = _curve(d)
            xs += [offset + s for s, _ in pts]
            ys += [v for _, v in pts]
            if pts:
                offset += pts[-1][0]
        if xs:
            ax.plot(xs, ys, marker="o", markersize=3, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("dev bits per character (block windows)")
    ax.set_title(f"{report['corpus']}: dev bits per character")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(run / "dev_bpc.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3.8))
    names = sorted({a for r in report["rounds"] for a in r["augmenters"]})
    width = 0.8 / max(1, len(report["rounds"]))
    for i, r in enumerate(report["rounds"]):
        vals = [r["augmenters"].get(a, {}).get("kept_fraction", 0.0) for a in names]
        ax.bar([j + i * width for j in range(len(names))], vals, width, label=f"round {r['round']}")
    ax.set_xticks([j + width * (len(report["rounds"]) - 1) / 2 for j in range(len(names))], names)
    ax.set_ylim(0, 1)
    ax.set_ylabel("kept fraction")
    ax.set_title("variants kept by the teacher's judgement")
    ax.legend()
    fig.tight_layout()
    fig.savefig(run / "kept_fraction.png", dpi=110)
    plt.close(fig)


def arm_entry(dones: list[dict[str, Any]]) -> dict[str, Any]:
    """One arm over its seeds: the means, their spread, and each seed's figures."""
    dev, test = (spread([d[k] for d in dones]) for k in ("dev_bits_per_char", "test_bits_per_char"))
    secs = [d["train_seconds"] for d in dones if d.get("train_seconds") is not None]
    tps = [d["tokens_per_second"] for d in dones if d.get("tokens_per_second")]
    return {"params": dones[0].get("params"), "dev_bits_per_char": dev["mean"], "test_bits_per_char": test["mean"],
            "dev_sd": dev["sd"], "test_sd": test["sd"], "seeds": len(dones),
            "train_seconds": round(sum(secs) / len(secs), 3) if secs else None,
            "tokens_per_second": round(sum(tps) / len(tps), 1) if tps else None,
            "per_seed": [{k: d.get(k) for k in ("seed", "dev_bits_per_char", "test_bits_per_char", "steps",
                                                "best_step")} for d in dones]}


def seed_dones(models_dir: Path, arm: str) -> list[dict[str, Any]]:
    """The finished seeds of an arm (`ARM-s0`, `ARM-s1`, ... up to the first missing)."""
    out, i = [], 0
    while (done := read_done(models_dir / f"{arm}-s{i}")) is not None:
        out.append(done)
        i += 1
    return out


def convergence(models: dict[str, Any]) -> list[str]:
    """Which models stopped on dev (best step before their last) and which were still improving
    when their step budget ended (budget-bound: their figures are not their best)."""
    stopped, bound = [], []
    for name, m in models.items():
        seeds = m.get("per_seed")
        for i, s in enumerate(seeds or [m]):
            if s.get("steps") and s.get("best_step") is not None:
                label = f"{name}-s{i}" if seeds else name
                (bound if s["best_step"] >= s["steps"] else stopped).append(f"{label} (best step {s['best_step']} "
                                                                           f"of {s['steps']})")
    lines = [f"Stopped on dev: {', '.join(stopped)}."] if stopped else []
    if bound:
        lines.append(f"Budget-bound (best at the last step: still improving when the budget ended): {', '.join(bound)}.")
    return lines


def assemble(models_dir: Path, rounds: list[dict[str, Any]], best_round: dict[str, Any],
             ngram: dict[str, Any] | None = None, **head: Any) -> tuple[dict[str, Any], dict[str, list[Path]]]:
    """The report of a finished run (`head`: corpus, version, preset, ... first) and the curves to
    plot, from the rounds, every model's DONE.json under `models_dir` and the n-gram anchor
    (`lm.ngram.anchor`)."""
    models: dict[str, dict] = {}
    if ngram:
        models["ngram"] = {k: ngram.get(k) for k in MODEL_FIELDS} | {"method": ngram.get("method"),
                                                                      "order": ngram["order"]}
    curves: dict[str, list[Path]] = {}
    teacher = read_done(models_dir / "teacher")
    if teacher:
        models["teacher"] = {k: teacher.get(k) for k in MODEL_FIELDS + ("steps", "best_step")}
        curves["teacher"] = [models_dir / "teacher"]
    mixed = read_done(models_dir / MIX_MODEL)
    if mixed:
        models[MIX_MODEL] = {k: mixed.get(k) for k in MODEL_FIELDS + ("order", "teacher_weight")}
    arms = sorted({p.name.rsplit("-s", 1)[0] for p in models_dir.glob("*-s[0-9]*")},
                  key=row_order)
    per_arm: dict[str, list[dict[str, Any]]] = {}
    for arm in arms:
        dones = seed_dones(models_dir, arm)
        if dones:
            per_arm[arm] = dones
            models[arm] = arm_entry(dones)
            curves[arm] = [models_dir / f"{arm}-s0"]
    for rec in rounds:
        if rec["model"].startswith("student-r"):
            curves[rec["model"]] = [models_dir / rec["model"]]
    paired = {}
    for other in (a for a in per_arm if a != "student"):
        n = min(len(per_arm["student"]), len(per_arm[other])) if "student" in per_arm else 0
        if n:
            paired[f"student_vs_{other}"] = paired_difference(
                [d["test_bits_per_char"] for d in per_arm["student"][:n]],
                [d["test_bits_per_char"] for d in per_arm[other][:n]])
    augmenters: dict[str, dict] = {}
    for rec in rounds:
        for a, v in rec["augmenters"].items():
            acc = augmenters.setdefault(a, {"variants": 0, "kept": 0})
            acc["variants"] += v["variants"]
            acc["kept"] += v["kept"]
    for name, a in augmenters.items():
        a["kept_fraction"] = round(a["kept"] / a["variants"], 4) if a["variants"] else 0.0
        a["dev_gain"] = best_round.get("probe_gains", {}).get(name)
        a["dropped"] = best_round.get("dropped", {}).get(name)
    base = models.get("baseline", {}).get("test_bits_per_char")
    ratio = round(models["student"]["test_bits_per_char"] / base, 4) if base and "student" in models else None
    pools = per_arm["student"][0].get("pools") if "student" in per_arm else None
    head["attribution"] = attribution(paired, pools)
    head["convergence"] = convergence(models)
    corpus, version, preset = head.pop("corpus"), head.pop("version"), head.pop("preset")
    report = {"corpus": corpus, "version": version, "preset": preset, "rounds": rounds, "models": models,
              "paired": paired, "augmenters": augmenters, "best_round": best_round["round"],
              "student_over_baseline": ratio, **head}
    return report, curves


def write(run: Path, report: dict[str, Any], curves: dict[str, list[Path]]) -> None:
    write_json(run / "report.json", report)
    (run / "report.md").write_text(markdown(report), encoding="utf-8")
    plot(run, curves, report)
