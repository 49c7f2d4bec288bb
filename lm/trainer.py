"""The one training loop: `lm.train`, every distillation phase and the pruning fine-tune run it.

`train(out, cfg, optim, loop, data, dev, ...)` trains (or finishes training) one model in a run
folder and keeps there:

* `checkpoints/STEP` (Orbax: parameters, optimiser state, step; data position, seconds and the
  best dev loss as meta) every `loop.save_every` steps, at the end and when the deadline passes;
  `best/STEP`: the parameters with the lowest dev loss so far (without dev: the last saved);
* `metrics.jsonl` (`lm.run.Metrics`): every `loop.log_every` steps `step, loss, lr,
  tokens_per_s, train_seconds, elapsed` (plus `ce`, `kl` when a teacher is in the loss); the
  first step of a process, which compiles, logs `compile_seconds` instead of a speed; every
  `loop.eval_every` steps `step, dev_loss` (nats/token) and `dev_bpc` when the dev text was
  scored whole (block windows: an upper bound of `lm.evaluate`'s sliding-window figure).
  `train_seconds` counts the steps only (not compilation, evaluation or saving), `elapsed` the
  wall time, both summed over resumes.
  A resume first cuts the rows logged after its checkpoint (`lm.run.cut_metrics`): steps stay unique.

One jitted step (`make_step`) serves every loss (`lm.losses`): cross-entropy, or CE plus KL to a
teacher whose forward runs inside the step (`Teacher(cfg, params)`), or whose top-k outputs come
from a cache (`Teacher(cache=...)`, any object with `prepare`, `fill`, `lookup` and `flush`:
`lm.distill.teacher_cache`). `keep` (a 0/1 tree like the parameters) holds pruned weights at zero.

Early stopping: with `loop.patience` K, training stops (checkpointed) once K dev evaluations in a
row found no new best; `best/` then holds the model (`lm.loader` loads it), and a re-run trains no
further. Dropout (`cfg.dropout`) draws its masks from the seed folded with the step number.

A run killed part-way resumes from its last checkpoint, and N steps + resume + M steps gives the
parameters of N + M straight (the same compiled step on the same batches from the same state;
bitwise on one machine). The learning rate warms up linearly for `optim.warmup` steps, then
follows a cosine to `min_lr_ratio` x `lr` at `decay_steps` and stays there.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from lm import parallel
from lm.checkpoint import BEST_DIR, RESUME_DIR, Checkpoints, abstract_like
from lm.data import Batch, Batches, Packed, Pool
from lm.errors import TrainingDiverged, UsageError
from lm.losses import LossConfig, TopK, distill_loss, token_nll, topk_of
from lm.model import ModelConfig, count_params, init_params, make_apply, make_train_apply
from lm.run import Metrics, cut_metrics


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with warm-up and cosine decay, gradient clipping; weight decay on matrices only."""

    lr: float = 2e-3
    warmup: int = 0
    decay_steps: int = 1
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    beta2: float = 0.99                # small models, short runs (nanoGPT's Shakespeare setting)
    clip: float = 1.0


def make_optimizer(o: OptimConfig) -> tuple[optax.GradientTransformation, optax.Schedule]:
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=o.lr, warmup_steps=o.warmup,
        decay_steps=max(o.decay_steps, o.warmup + 1), end_value=o.lr * o.min_lr_ratio)
    decay_mask = lambda params: jax.tree.map(lambda x: x.ndim >= 2, params)  # noqa: E731
    tx = optax.chain(optax.clip_by_global_norm(o.clip),
                     optax.adamw(schedule, b1=0.9, b2=o.beta2, weight_decay=o.weight_decay, mask=decay_mask))
    return tx, schedule


@dataclass(frozen=True)
class LoopConfig:
    steps: int                         # total optimiser steps of the run
    batch: int
    eval_every: int
    save_every: int
    log_every: int = 10
    desc: str | None = None            # progress bar label
    quiet: bool = False
    patience: int | None = None        # stop after this many dev evaluations without a new best

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 1:
            raise UsageError("steps and batch must be positive")
        if self.patience is not None and self.patience < 1:
            raise UsageError(f"patience must be at least 1 dev evaluation, not {self.patience}")


@dataclass(frozen=True)
class Dev:
    """Dev sequences scored during training; `chars` is their text's length when they hold the
    whole dev text (then `dev_bpc` is logged), else None."""

    packed: Packed
    chars: int | None


class SoftTargetCache(Protocol):
    def prepare(self, pools: list[Pool]) -> None: ...
    def fill(self, pools: list[Pool], rows: dict[int, np.ndarray], width: int, quiet: bool = True) -> None: ...
    def lookup(self, batch: Batch, pools: list[Pool]) -> TopK: ...
    def flush(self) -> None: ...


@dataclass(frozen=True)
class Teacher:
    """Where soft targets come from: a Flax model run inside the step, or a top-k cache."""

    cfg: ModelConfig | None = None
    params: Any = None
    cache: SoftTargetCache | None = None


def soft_target_mode(teacher: Teacher | None, loss: LossConfig) -> str:
    """How a step gets soft targets: "ce" (none), "live" (teacher forward in the step), "cached"."""
    if teacher is None or not loss.uses_teacher:
        return "ce"
    return "cached" if teacher.cache is not None else "live"


def make_step(cfg: ModelConfig, loss: LossConfig, tx: optax.GradientTransformation, mesh: jax.sharding.Mesh,
              mode: str = "ce", teacher_cfg: ModelConfig | None = None, masked: bool = False):
    """The jitted update `(params, opt_state, extra, batch, step) -> (params, opt_state, (loss, ce,
    kl))`; dropout (`cfg.dropout`) draws from `extra["key"]` folded with the step number.

    mode "ce" (no teacher), "live" (`extra["teacher"]`'s forward inside, on `batch["xc"]`) or
    "cached" (`batch["idx"]`, `batch["vals"]`: top-k ids and log-probs); `batch` always has
    "x", "y", "m". `masked`: the update is multiplied by `extra["keep"]`. Gradients are
    all-reduced by XLA across the mesh."""
    apply = make_train_apply(cfg)
    t_apply = make_apply(teacher_cfg) if mode == "live" else None
    alpha = loss.alpha if mode != "ce" else 1.0

    def loss_fn(params, extra, b, step):
        key = jax.random.fold_in(jax.random.wrap_key_data(extra["key"]), step) if cfg.dropout else None
        logits = apply(params, b["x"], key)
        kw: dict[str, Any] = {}
        if mode == "live":
            t_logits = jax.lax.stop_gradient(t_apply(extra["teacher"], b["xc"]))
            if loss.top_k:
                kw["teacher_topk"] = topk_of(t_logits, loss.top_k, loss.temperature)
            else:
                kw["teacher_logits"] = t_logits
        elif mode == "cached":
            kw["teacher_topk"] = TopK(b["idx"], b["vals"])
        value, parts = distill_loss(logits, b["y"], b["m"], alpha=alpha, temperature=loss.temperature,
                                    kind=loss.kl, tail=loss.tail, **kw)
        return value, (parts["ce"], parts["kl"])

    def step(params, opt_state, extra, b, step_no):
        (value, (ce, kl)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, extra, b, step_no)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        if masked:  # pruned weights stay zero
            params = jax.tree.map(lambda p, k: p * k, params, extra["keep"])
        return params, opt_state, (value, ce, kl)

    repl, data = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    return jax.jit(step, in_shardings=(repl, repl, repl, data, repl), out_shardings=(repl, repl, repl),
                   donate_argnums=(0, 1))


def make_eval_step(cfg: ModelConfig, mesh: jax.sharding.Mesh):
    apply = make_apply(cfg)

    def nll_sum(params, x, y, m):
        return jnp.sum(token_nll(apply(params, x), y) * m)

    repl, data = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    return jax.jit(nll_sum, in_shardings=(repl, data, data, data), out_shardings=repl)


def block_eval(eval_step, params, packed: Packed, batch: int) -> tuple[float, float]:
    """(sum of NLL in nats, tokens scored) over packed sequences, each scored on its own."""
    total, count = 0.0, 0.0
    for i in range(0, len(packed), batch):
        toks, mask = packed.tokens[i:i + batch], packed.mask[i:i + batch]
        if len(toks) < batch:  # pad to a full, evenly sharded batch; padding weighs nothing
            pad = batch - len(toks)
            toks = np.concatenate([toks, np.zeros((pad, toks.shape[1]), toks.dtype)])
            mask = np.concatenate([mask, np.zeros((pad, mask.shape[1]), mask.dtype)])
        total += float(eval_step(params, toks[:, :-1], toks[:, 1:], mask))
        count += float(mask.sum())
    return total, count


def resume_step(out: Path) -> int:
    """The step a run folder's last checkpoint reached (0 for a new run)."""
    return Checkpoints(Path(out), read_only=True).latest_step(RESUME_DIR) or 0


def _batch_arrays(b: Batch, mode: str, cache: SoftTargetCache | None, pools: list[Pool]) -> dict[str, np.ndarray]:
    arrays = {"x": b.inputs, "y": b.targets, "m": b.mask}
    if mode == "live":
        arrays["xc"] = b.clean_inputs
    elif mode == "cached":
        top = cache.lookup(b, pools)
        arrays |= {"idx": top.indices, "vals": top.logprobs}
    return arrays


def train(out: Path, cfg: ModelConfig, optim: OptimConfig, loop: LoopConfig, data: Batches, dev: Dev | None, *,
          seed: int, loss: LossConfig = LossConfig(), teacher: Teacher | None = None, start_params: Any = None,
          keep: Any = None, deadline: float | None = None) -> dict[str, Any]:
    """Train (or finish training) one model in `out`; returns its summary. `start_params`: the
    initial parameters (default: drawn from `seed`); `deadline`: a `time.perf_counter()` value
    after which the run stops, evaluated and checkpointed."""
    out = Path(out)
    t0 = time.perf_counter()
    mesh = parallel.make_mesh()
    parallel.check_batch(loop.batch, mesh)
    mode = soft_target_mode(teacher, loss)
    tx, schedule = make_optimizer(optim)
    # a copy: the step donates its parameter buffers, and the caller's model lives on
    params = jax.tree.map(np.array, start_params) if start_params is not None else init_params(cfg, seed)
    opt_state = tx.init(params)
    repl, data_sh = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    ckpts = Checkpoints(out)
    start = ckpts.latest_step() or 0
    seconds0, elapsed0, tokens0, best = 0.0, 0.0, 0, math.inf
    best_step, stale = 0, 0  # the best dev evaluation's step; evaluations since it
    if start:
        tree = {"params": params, "opt_state": opt_state, "step": np.int64(0)}
        state, meta = ckpts.restore(RESUME_DIR, abstract_like(tree, repl))
        params, opt_state = state["params"], state["opt_state"]
        data.restore(meta["data"])
        seconds0, elapsed0 = float(meta.get("train_seconds", 0.0)), float(meta.get("elapsed", 0.0))
        tokens0 = int(meta.get("tokens", 0))
        best = float(meta["best_dev_loss"]) if meta.get("best_dev_loss") is not None else math.inf
        best_step, stale = int(meta.get("best_step", 0)), int(meta.get("stale_evals", 0))

    stopped = bool(loop.patience and stale >= loop.patience)
    if start >= loop.steps or stopped:
        ckpts.close()
        return {"steps": start, "resumed_from": start, "train_seconds": seconds0, "elapsed": elapsed0,
                "tokens": tokens0, "tokens_per_second": round(tokens0 / seconds0, 1) if seconds0 else 0.0,
                "best_dev_loss": best if math.isfinite(best) else None, "best_step": best_step,
                "stopped_early": stopped, "params": count_params(params), "deadline_reached": False}

    params, opt_state = parallel.put(params, repl), parallel.put(opt_state, repl)
    extra: dict[str, Any] = {}
    if mode == "live":
        extra["teacher"] = parallel.put(teacher.params, repl)
    if keep is not None:
        extra["keep"] = parallel.put(keep, repl)
    if cfg.dropout:
        extra["key"] = parallel.put(jax.random.key_data(jax.random.key(seed)), repl)
    step_fn = make_step(cfg, loss, tx, mesh, mode, teacher.cfg if mode == "live" else None, keep is not None)
    eval_fn = make_eval_step(cfg, mesh)
    cache = teacher.cache if mode == "cached" else None
    if cache is not None:  # teacher outputs for every sequence this run will read, in full batches
        cache.prepare(data.pools)
        cache.fill(data.pools, data.plan(loop.steps - start), loop.batch, loop.quiet)
    tokens_per_step = loop.batch * cfg.context

    cut_metrics(out, start)  # rows a killed process logged after the checkpoint are logged again
    metrics = Metrics(out)
    bar = tqdm(total=loop.steps, initial=start, disable=loop.quiet, unit="step", desc=loop.desc, dynamic_ncols=True)
    step, seconds, tokens, timed_tokens = start, seconds0, tokens0, 0
    compile_s, last_loss, dev_loss = 0.0, math.nan, None
    pending: list = []
    t_mark = time.perf_counter()

    def elapsed() -> float:
        return round(elapsed0 + time.perf_counter() - t0, 3)

    def flush(first: bool = False) -> float:
        """Log the mean of the pending losses; stop on a NaN."""
        nonlocal pending, seconds, t_mark
        vals = np.asarray(jax.device_get(pending), np.float64).reshape(len(pending), 3)
        now = time.perf_counter()
        if not np.all(np.isfinite(vals)):
            bad = step - len(vals) + int(np.argmin(np.all(np.isfinite(vals), axis=1)))
            raise TrainingDiverged(
                f"{out}: loss is {vals[~np.isfinite(vals)][0]} at step {bad + 1}: training diverged; lower --lr "
                f"(now {optim.lr}) or raise --warmup; the last good checkpoint is step "
                f"{ckpts.latest_step() or 'none'} in {out / RESUME_DIR}")
        mean = vals.mean(axis=0)
        entry: dict[str, Any] = {"step": step, "loss": round(float(mean[0]), 6)}
        if mode != "ce":
            entry |= {"ce": round(float(mean[1]), 6), "kl": round(float(mean[2]), 6)}
        entry["lr"] = float(schedule(step - 1))
        if first:
            entry["compile_seconds"] = round(compile_s, 3)
        else:
            seconds += now - t_mark
            entry["tokens_per_s"] = round(len(vals) * tokens_per_step / max(now - t_mark, 1e-9), 1)
            entry["train_seconds"] = round(seconds, 3)
        entry["elapsed"] = elapsed()
        metrics.write(entry)
        pending = []
        t_mark = time.perf_counter()  # logging is not training time
        return float(mean[0])

    try:
        while step < loop.steps:
            b = data.next()
            arrays = _batch_arrays(b, mode, cache, data.pools)
            params, opt_state, losses = step_fn(params, opt_state, extra, jax.device_put(arrays, data_sh),
                                                np.int32(step))
            step += 1
            tokens += tokens_per_step
            pending.append(losses)
            if step == start + 1:  # the first step compiles: kept out of the training time
                losses[0].block_until_ready()
                compile_s = time.perf_counter() - t_mark
                last_loss = flush(first=True)
            else:
                timed_tokens += tokens_per_step
            bar.update(1)
            out_of_time = deadline is not None and time.perf_counter() >= deadline
            at_eval = step % loop.eval_every == 0 or step == loop.steps or out_of_time
            at_save = step % loop.save_every == 0 or step == loop.steps or out_of_time
            if pending and (step % loop.log_every == 0 or at_eval or at_save):
                last_loss = flush()
                bar.set_postfix(loss=f"{last_loss:.4f}", refresh=False)
            if at_eval and dev is not None:
                nll, n = block_eval(eval_fn, params, dev.packed, loop.batch)
                dev_loss = nll / n
                entry = {"step": step, "dev_loss": round(dev_loss, 6)}
                if dev.chars:
                    entry["dev_bpc"] = round(nll / math.log(2) / dev.chars, 6)
                metrics.write(entry | {"elapsed": elapsed()})
                if dev_loss < best:
                    best, best_step, stale = dev_loss, step, 0
                    ckpts.save(BEST_DIR, step, {"params": params}, {"step": step, "dev_loss": dev_loss})
                else:
                    stale += 1
                stopped = bool(loop.patience and stale >= loop.patience)
                at_save = at_save or stopped
            if at_save:
                if dev is None:
                    ckpts.save(BEST_DIR, step, {"params": params}, {"step": step, "dev_loss": None})
                if cache is not None:
                    cache.flush()  # stored rows and their flags before the checkpoint
                ckpts.save(RESUME_DIR, step, {"params": params, "opt_state": opt_state, "step": np.int64(step)},
                           {"data": data.state(), "train_seconds": seconds, "elapsed": elapsed(), "tokens": tokens,
                            "step": step, "best_dev_loss": best if math.isfinite(best) else None,
                            "best_step": best_step, "stale_evals": stale})
            if at_eval or at_save:
                t_mark = time.perf_counter()  # evaluation and saving are not training time
            if out_of_time or stopped:
                break
    finally:
        bar.close()
        metrics.close()
        ckpts.close()
    return {"steps": step, "resumed_from": start, "loss": last_loss, "dev_loss": dev_loss,
            "best_dev_loss": best if math.isfinite(best) else None, "best_step": best_step,
            "stopped_early": stopped, "train_seconds": round(seconds, 3),
            "elapsed": elapsed(), "tokens": tokens, "compile_seconds": round(compile_s, 3),
            "tokens_per_second": round(timed_tokens / (seconds - seconds0), 1) if seconds > seconds0 else 0.0,
            "params": count_params(params), "deadline_reached": step < loop.steps and not stopped}
