"""One training phase of the distillation loop: a model, its data, an optional teacher.

The phase writes a run folder that `lm.loader.load_model` and `lm.evaluate` read like one made by
`lm.train` (`run.json`, `tokenizer.model`, `checkpoints/STEP` to resume, `best/STEP` with the
lowest dev loss, `metrics.jsonl`), using the same optimiser (`lm.train.make_optimizer`: AdamW,
warm-up and cosine, clipping), the same dev evaluation (`lm.train.block_eval`) and the same
checkpoints. What it adds is the loss (`lm.kd.distill_loss`): CE only, or CE plus KL to a teacher
computed on the fly in the same jitted step (same tokenizer), or read from a top-k cache.

A phase killed part-way resumes from its last checkpoint (parameters, optimiser, step and data
position), so the batches and schedule are those of a straight run.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from lm import parallel
from lm.checkpoint import BEST_DIR, RESUME_DIR, Checkpoints, abstract_like
from lm.corpus import Snapshot
from lm.data import Packed
from lm.errors import TrainingDiverged, UsageError
from lm.kd import KL_KINDS, TAILS, TopK, distill_loss, topk_of
from lm.mixture import MixBatches
from lm.model import ModelConfig, count_params, init_params, make_apply
from lm.teacher_cache import TeacherCache
from lm.tokenizer import MODEL_FILE, Tokenizer
from lm.train import METRICS_FILE, RUN_FILE, TrainSettings, block_eval, make_eval_step, make_optimizer


@dataclass(frozen=True)
class PhaseConfig:
    steps: int
    batch: int = 32
    lr: float = 2e-3
    warmup: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    beta2: float = 0.99
    clip: float = 1.0
    seed: int = 0
    eval_points: int = 6           # dev evaluations over the phase (the curve in the report)
    alpha: float = 1.0             # 1: cross-entropy only
    temperature: float = 1.0
    kl: str = "forward"
    top_k: int = 0                 # 0: full teacher distribution (on the fly)
    tail: str = "bucket"

    def __post_init__(self) -> None:
        if self.kl not in KL_KINDS:
            raise UsageError(f"--kl must be one of {', '.join(KL_KINDS)}, not {self.kl!r}")
        if self.tail not in TAILS:
            raise UsageError(f"--tail must be one of {', '.join(TAILS)}, not {self.tail!r}")
        if not 0.0 <= self.alpha <= 1.0 or self.temperature <= 0:
            raise UsageError("need 0 <= --alpha <= 1 and --temperature > 0")
        if self.steps < 1 or self.batch < 1:
            raise UsageError("steps and batch must be positive")


@dataclass
class Teacher:
    """Where soft targets come from: a Flax teacher run in the step (`params`, its shape given
    to `train_phase` as `teacher_cfg`), or a top-k cache."""

    params: Any = None
    cache: TeacherCache | None = None


def make_step(cfg: ModelConfig, phase: PhaseConfig, tx: optax.GradientTransformation, mesh,
              teacher_cfg: ModelConfig | None, mode: str, masked: bool = False):
    """The jitted update. mode: "ce" (no teacher), "live" (teacher forward inside), "cached".
    `masked`: the step's `keep` argument (a 0/1 tree like the parameters) multiplies the update."""
    apply = make_apply(cfg)
    t_apply = make_apply(teacher_cfg) if teacher_cfg is not None else None

    def loss_fn(params, t_params, x, xc, y, m, idx, vals):
        logits = apply(params, x)
        kw: dict[str, Any] = {}
        if mode == "live":
            t_logits = jax.lax.stop_gradient(t_apply(t_params, xc))
            if phase.top_k:
                kw["teacher_topk"] = topk_of(t_logits, phase.top_k, phase.temperature)
            else:
                kw["teacher_logits"] = t_logits
        elif mode == "cached":
            kw["teacher_topk"] = TopK(idx, vals)
        loss, parts = distill_loss(logits, y, m, alpha=phase.alpha if mode != "ce" else 1.0,
                                   temperature=phase.temperature, kind=phase.kl, tail=phase.tail, **kw)
        return loss, parts

    def step(params, opt_state, t_params, keep, x, xc, y, m, idx, vals):
        (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, t_params, x, xc, y, m, idx, vals)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        if masked:  # pruned weights stay zero (lm.prune)
            params = jax.tree.map(lambda p, k: p * k, params, keep)
        return params, opt_state, loss, parts["ce"], parts["kl"]

    repl, data = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    return jax.jit(step, in_shardings=(repl, repl, repl, repl, data, data, data, data, data, data),
                   out_shardings=(repl, repl, repl, repl, repl), donate_argnums=(0, 1))


def write_run_json(out: Path, cfg: ModelConfig, phase: PhaseConfig, tok: Tokenizer, snapshot: Snapshot,
                   extra: dict[str, Any]) -> None:
    """run.json in lm.train's layout, so lm.loader and lm.evaluate read the folder."""
    settings = asdict(TrainSettings(batch=phase.batch, lr=phase.lr, warmup=phase.warmup, decay_steps=phase.steps,
                                    min_lr_ratio=phase.min_lr_ratio, weight_decay=phase.weight_decay,
                                    beta2=phase.beta2, clip=phase.clip, seed=phase.seed,
                                    vocab_size=tok.vocab_size))
    info = {
        "model": cfg.to_dict(), "train": settings, "distill": asdict(phase) | extra,
        "fixed": {"warmup": phase.warmup, "decay_steps": phase.steps}, "steps": phase.steps,
        "params": cfg.n_params(), "devices": len(jax.local_devices()), "platform": jax.devices()[0].platform,
        "corpus": {"name": snapshot.name, "version": snapshot.version, "path": str(snapshot.root.resolve()),
                   "separator": snapshot.separator},
        "tokenizer": tok.describe(), "jax": jax.__version__,
    }
    out.mkdir(parents=True, exist_ok=True)
    tok.save(out / MODEL_FILE)
    tmp = out / (RUN_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out / RUN_FILE)


def train_phase(out: Path, name: str, cfg: ModelConfig, phase: PhaseConfig, data: MixBatches, dev: Packed | None,
                dev_chars: int, tok: Tokenizer, snapshot: Snapshot, *, teacher: Teacher | None = None,
                teacher_cfg: ModelConfig | None = None, start_params: Any = None, quiet: bool = False,
                extra: dict[str, Any] | None = None, keep: Any = None) -> dict[str, Any]:
    """Train (or finish training) one model in `out`; returns its training summary. `keep`: a
    0/1 tree like the parameters; weights where it is 0 stay 0 (pruning's recovery fine-tune)."""
    mesh = parallel.make_mesh()
    parallel.check_batch(phase.batch, mesh)
    mode = "ce" if teacher is None or phase.alpha >= 1.0 else ("cached" if teacher.cache is not None else "live")
    write_run_json(out, cfg, phase, tok, snapshot, {"name": name, "teacher": mode, **(extra or {})})
    tx, schedule = make_optimizer(TrainSettings(lr=phase.lr, min_lr_ratio=phase.min_lr_ratio,
                                                weight_decay=phase.weight_decay, beta2=phase.beta2,
                                                clip=phase.clip), phase.steps, phase.warmup)
    # a copy: the step donates its parameter buffers, and the caller's model (the judge) lives on
    params = jax.tree.map(np.array, start_params) if start_params is not None else init_params(cfg, phase.seed)
    opt_state = tx.init(params)
    repl, data_sh = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    ckpts = Checkpoints(out)
    start = ckpts.latest_step() or 0
    seconds0, best, tokens0 = 0.0, math.inf, 0
    if start:
        tree = {"params": params, "opt_state": opt_state, "step": np.int64(0)}
        state, meta = ckpts.restore(RESUME_DIR, abstract_like(tree, repl))
        params, opt_state = state["params"], state["opt_state"]
        data.restore(meta["data"])
        seconds0, tokens0 = float(meta.get("train_seconds", 0.0)), int(meta.get("tokens", 0))
        best = float(meta["best_dev_loss"]) if meta.get("best_dev_loss") is not None else math.inf
    if start >= phase.steps:
        ckpts.close()
        return {"steps": start, "train_seconds": seconds0, "tokens": tokens0,
                "tokens_per_second": tokens0 / seconds0 if seconds0 else 0.0, "resumed_from": start}

    params, opt_state = parallel.put(params, repl), parallel.put(opt_state, repl)
    t_params = parallel.put(teacher.params, repl) if mode == "live" else jnp.zeros(())
    step_fn = make_step(cfg, phase, tx, mesh, teacher_cfg if mode == "live" else None, mode, keep is not None)
    keep = parallel.put(keep, repl) if keep is not None else jnp.zeros(())
    eval_fn = make_eval_step(cfg, mesh)
    if mode == "cached":  # teacher outputs for every sequence this phase will read, in full batches
        teacher.cache.prepare(data.pools)
        teacher.cache.fill(data.pools, data.plan(phase.steps - start), phase.batch, quiet)
    every = max(1, phase.steps // max(1, phase.eval_points))
    k = phase.top_k or 1
    no_idx = np.zeros((phase.batch, cfg.context, k), np.int32)
    no_val = np.zeros((phase.batch, cfg.context, k), np.float16)

    metrics = open(out / METRICS_FILE, "a", encoding="utf-8")
    bar = tqdm(total=phase.steps, initial=start, disable=quiet, unit="step", desc=name, dynamic_ncols=True)
    step, seconds, tokens = start, seconds0, tokens0
    compile_s = 0.0
    pending: list = []
    t_mark = time.perf_counter()

    def emit(entry: dict[str, Any]) -> None:
        metrics.write(json.dumps(entry) + "\n")
        metrics.flush()

    try:
        while step < phase.steps:
            b = data.next()
            if mode == "cached":
                top = teacher.cache.lookup(b, data.pools)
                idx, vals = top.indices, top.logprobs
            else:
                idx, vals = no_idx, no_val
            args = [jax.device_put(v, data_sh) for v in (b.inputs, b.clean_inputs, b.targets, b.mask, idx, vals)]
            params, opt_state, loss, ce, kl = step_fn(params, opt_state, t_params, keep, *args)
            step += 1
            tokens += phase.batch * cfg.context
            pending.append((loss, ce, kl))
            if step == start + 1:  # the first step compiles: kept out of the training time
                loss.block_until_ready()
                compile_s = time.perf_counter() - t_mark
                t_mark = time.perf_counter()
            bar.update(1)
            at_eval = step % every == 0 or step == phase.steps
            if step % 20 == 0 or at_eval:
                vals_np = np.asarray(jax.device_get(pending), np.float64)
                now = time.perf_counter()
                seconds += now - t_mark
                t_mark = now
                if not np.all(np.isfinite(vals_np)):
                    raise TrainingDiverged(f"{name}: loss is not finite at step {step}; lower the learning rate")
                mean = vals_np.mean(axis=0)
                emit({"step": step, "loss": round(mean[0], 6), "ce": round(mean[1], 6), "kl": round(mean[2], 6),
                      "lr": float(schedule(step - 1)), "train_seconds": round(seconds, 3)})
                bar.set_postfix(loss=f"{mean[0]:.3f}", refresh=False)
                pending = []
            if at_eval:
                entry: dict[str, Any] = {"step": step}
                if dev is not None:
                    nll, n = block_eval(eval_fn, params, dev, phase.batch)
                    entry |= {"dev_loss": round(nll / n, 6), "dev_bpc": round(nll / math.log(2) / dev_chars, 6)}
                    if nll / n < best:
                        best = nll / n
                        ckpts.save(BEST_DIR, step, {"params": params}, {"step": step, "dev_loss": best})
                else:
                    ckpts.save(BEST_DIR, step, {"params": params}, {"step": step, "dev_loss": None})
                emit(entry)
                if mode == "cached":
                    teacher.cache.flush()  # stored rows and their flags before the checkpoint
                ckpts.save(RESUME_DIR, step, {"params": params, "opt_state": opt_state, "step": np.int64(step)},
                           {"data": data.state(), "train_seconds": seconds, "tokens": tokens, "step": step,
                            "best_dev_loss": best if math.isfinite(best) else None})
                t_mark = time.perf_counter()  # evaluation and saving are not training time
    finally:
        bar.close()
        metrics.close()
        ckpts.close()
    # the first step of a fresh process (compilation) counts no tokens either
    tokens_timed = tokens - (phase.batch * cfg.context if start < phase.steps else 0)
    return {"steps": step, "train_seconds": round(seconds, 3), "tokens": tokens, "compile_seconds": round(compile_s, 3),
            "tokens_per_second": round(tokens_timed / seconds, 1) if seconds else 0.0, "resumed_from": start,
            "params": count_params(params), "best_dev_loss": best if math.isfinite(best) else None}

