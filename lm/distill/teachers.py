"""The judge and the teacher: trained here with the `teacher` model preset (first on real train
text only, the judge; then continued on real plus kept augmented text, the teacher), or given:
`--teacher RUN` (one of our run folders: it judges and teaches) or `--teacher-hf PATH` (a local
Hugging Face causal LM: it judges and teaches by its samples). Each is evaluated once and marked
finished in `RUN/models/{judge,teacher}/DONE.json`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from lm.data import Batches, text_pool
from lm.errors import UsageError
from lm.loader import FlaxModel, load_model
from lm.run import read_done, read_metrics, read_run

from lm.distill.workspace import Workspace


def train_judge(ws: Workspace) -> FlaxModel:
    """The teacher preset trained on real train text only: it never trains on what it judges."""
    name, pre, seed = "judge", ws.preset, ws.settings.seed
    if not ws.done(name):
        cfg = pre.teacher_model(ws.tok.vocab_size)
        schedule = ws.schedule(name, pre.judge_steps, pre.teacher_lr, pre.eval_points)
        data = Batches(ws.real(cfg.context), pre.batch, seed)
        ws.log(f"judge: teacher preset ({cfg.n_params():,} params) on real train text, {pre.judge_steps} steps")
        ws.mark_done(name, ws.train(name, cfg, schedule, data, ws.dev(cfg.context), seed=seed,
                                    describe={"data": "real"}))
    return load_model(ws.models / name)


def train_teacher(ws: Workspace, judge: FlaxModel, kept: list[dict]) -> FlaxModel:
    """The judge continued on real text plus the kept variants of round 1."""
    name, pre, seed = "teacher", ws.preset, ws.settings.seed + 1
    if ws.done(name):
        return load_model(ws.models / name)
    cfg, sep = judge.cfg, ws.snapshot.separator
    pools = [text_pool(n, ws.tok, [r["text"] for r in kept if r["augmenter"] == n], cfg.context, sep)
             for n in sorted({r["augmenter"] for r in kept})]
    data = Batches(ws.real(cfg.context), pre.batch, seed, pools, {p.name: len(p) for p in pools},
                   ws.settings.aug_share)
    schedule = ws.schedule(name, pre.teacher_steps, pre.teacher_lr, max(2, pre.eval_points // 2))
    ws.log(f"teacher: the judge continued on real + {len(kept):,} kept variants, {pre.teacher_steps} steps")
    summary = ws.train(name, cfg, schedule, data, ws.dev(cfg.context), seed=seed, start_params=judge.params,
                       describe={"data": "real+kept", "from": "judge"})
    model = load_model(ws.models / name)
    j = ws.done("judge")
    seconds = j["train_seconds"] + summary["train_seconds"]
    tokens = j["tokens"] + summary["tokens"]
    ws.mark_done(name, {"params": cfg.n_params(), **ws.evaluate(model), "train_seconds": round(seconds, 3),
                        "tokens_per_second": round(tokens / seconds, 1) if seconds else 0.0,
                        "steps": {"judge": j["steps"], "continued": summary["steps"]}})
    return model


def external_teacher(ws: Workspace) -> Any:
    """--teacher RUN or --teacher-hf PATH: loaded, evaluated once (DONE.json), returned."""
    s = ws.settings
    if s.teacher_hf:
        from lm.hf_model import HFModel
        model = HFModel(s.teacher_hf, label="--teacher-hf")
    else:
        model = load_model(s.teacher)
        if not isinstance(model, FlaxModel):
            raise UsageError(f"--teacher {s.teacher}: not a Flax run folder")
        if (read_run(Path(s.teacher)) or {}).get("train", {}).get("augmented"):
            ws.log("warning: the --teacher run trained on augmented text: it judges text it may have seen")
    if not ws.done("teacher"):
        seconds, tps = (None, None) if s.teacher_hf else run_speed(Path(s.teacher))
        n = model.n_params if s.teacher_hf else model.cfg.n_params()
        ws.mark_done("teacher", {"params": n, **ws.evaluate(model), "train_seconds": seconds,
                                 "tokens_per_second": tps, "source": s.teacher_hf or s.teacher})
    return model


def run_speed(run: Path) -> tuple[float | None, float | None]:
    """(train seconds, tokens/s) of one of our runs: a distillation model's DONE.json, or an
    lm.train run's metrics (`train_seconds` excludes each process's first, compiling step)."""
    done = read_done(run)
    if done is not None:
        return done.get("train_seconds"), done.get("tokens_per_second")
    info, lines = read_run(run), read_metrics(run)
    timed = [x for x in lines if "train_seconds" in x]
    if info is None or not timed or not timed[-1]["train_seconds"]:
        return None, None
    seconds = float(timed[-1]["train_seconds"])
    compiled = sum(1 for x in lines if "compile_seconds" in x)
    tokens = (timed[-1]["step"] - compiled) * info["train"]["batch"] * info["model"]["context"]
    return round(seconds, 3), round(tokens / seconds, 1)
