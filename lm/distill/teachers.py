"""The teacher: trained here with the preset's teacher shape on real train text only (to
convergence: dropout, early stopping on dev), or given: `--teacher RUN` (one of our run folders)
or `--teacher-hf PATH` (a local Hugging Face causal LM: it teaches by its samples). It never
judges (the cross-fitted judges do, `judge`). Each is evaluated once and marked finished in
`RUN/models/teacher/DONE.json`, with what it trained on (`data`, from its run.json)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from lm.data import Batches
from lm.errors import UsageError
from lm.loader import FlaxModel, load_model
from lm.run import data_record, read_done, read_metrics, read_run

from lm.distill.workspace import Workspace


def train_teacher(ws: Workspace) -> FlaxModel:
    """The preset's teacher shape on real train text only: `student_no_aug` learns from it without
    seeing a single augmented sentence, even through its soft targets."""
    name, s = "teacher", ws.settings
    seed = s.seed + 1000
    if not ws.done(name):
        cfg = s.teacher_model(ws.tok.vocab_size)
        ws.log(f"teacher: {cfg.n_params():,} params on real train text, at most {s.teacher_steps} steps")
        summary = ws.train(name, cfg, ws.schedule(name, s.teacher_steps, s.teacher_lr),
                           Batches(ws.real(cfg.context), s.batch, seed), ws.dev(cfg.context), seed=seed,
                           data_used=data_record(ws.snapshot, ["train"]), describe={"data": "real"})
        model = load_model(ws.models / name)
        ws.mark_done(name, {"params": cfg.n_params(), **ws.evaluate(model), **summary.timing(),
                            "data": data_record(ws.snapshot, ["train"])})
    return load_model(ws.models / name)


def external_teacher(ws: Workspace) -> Any:
    """--teacher RUN or --teacher-hf PATH: loaded, evaluated once (DONE.json), returned. The
    DONE.json keeps the run's `data` record (None: unknown, as for any Hugging Face model)."""
    s = ws.settings
    if s.teacher_hf:
        from lm.hf_model import HFModel
        model = HFModel(s.teacher_hf, label="--teacher-hf")
    else:
        model = load_model(s.teacher)
        if not isinstance(model, FlaxModel):
            raise UsageError(f"--teacher {s.teacher}: not a Flax run folder")
    if not ws.done("teacher"):
        seconds, tps = (None, None) if s.teacher_hf else run_speed(Path(s.teacher))
        n = model.n_params if s.teacher_hf else model.cfg.n_params()
        data = None if s.teacher_hf else (read_run(Path(s.teacher)) or {}).get("data")
        ws.mark_done("teacher", {"params": n, **ws.evaluate(model), "train_seconds": seconds,
                                 "tokens_per_second": tps, "source": s.teacher_hf or s.teacher, "data": data})
    return model


def augmentation_free(ws: Workspace) -> str | None:
    """None when the teacher provably trained on no augmented text; else why not."""
    done = ws.done("teacher") or {}
    data = done.get("data")
    if data is None:
        return "the teacher's training data is not recorded (a Hugging Face model, or a run made before provenance)"
    if data.get("augmented"):
        return f"the teacher trained on {data['augmented']['variants']:,} augmented variants"
    return None


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
