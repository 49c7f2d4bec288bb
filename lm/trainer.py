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

One jitted step (`lm.objective.make_step`) serves every objective: cross-entropy, or CE plus KL
to a teacher whose forward runs inside the step (`Teacher(cfg, params)`), or whose top-k outputs
come from a cache (`Teacher(cache=...)`). `keep` (a 0/1 tree like the parameters) holds pruned
weights at zero. The loop is a `Trainer`, a small state object whose steps are its methods
(`restore`, `setup`, `step`, `log`, `evaluate`, `save`); every exit returns one `Summary`.

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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax
from tqdm import tqdm

from lm import parallel
from lm.checkpoint import BEST_DIR, RESUME_DIR, Checkpoints, abstract_like
from lm.data import Batches, Packed
from lm.errors import TrainingDiverged, UsageError
from lm.losses import LossConfig
from lm.model import ModelConfig, count_params, init_params
from lm.objective import Objective, Teacher, block_eval, make_eval_step, make_step, objective_for
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

    def __post_init__(self) -> None:
        rules = {"lr": (self.lr > 0, "positive"), "warmup": (self.warmup >= 0, "at least 0"),
                 "decay_steps": (self.decay_steps >= 1, "at least 1"),
                 "min_lr_ratio": (0 <= self.min_lr_ratio <= 1, "in [0, 1]"),
                 "weight_decay": (self.weight_decay >= 0, "at least 0"), "beta2": (0 < self.beta2 < 1, "in (0, 1)"),
                 "clip": (self.clip > 0, "positive")}
        for name, (ok, what) in rules.items():
            if not ok:  # also false for NaN
                raise UsageError(f"--{name.replace('_', '-')} must be {what}, not {getattr(self, name)}")


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
        for name in ("eval_every", "save_every", "log_every"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}")
        if self.patience is not None and self.patience < 1:
            raise UsageError(f"patience must be at least 1 dev evaluation, not {self.patience}")


@dataclass(frozen=True)
class Dev:
    """Dev sequences scored during training; `chars` is their text's length when they hold the
    whole dev text (then `dev_bpc` is logged), else None."""

    packed: Packed
    chars: int | None


@dataclass(frozen=True)
class Summary:
    """What a call of `train` did, the same fields from every exit (a run already finished, or
    stopped early, trains nothing and reports where it stands)."""

    steps: int                         # the step the run has reached
    resumed_from: int                  # the step this call started from (0: a new run)
    best_dev_loss: float | None        # nats/token of the best dev evaluation (None: no dev)
    best_step: int
    stopped_early: bool                # patience ran out (now or in an earlier call)
    train_seconds: float               # time in steps, over every call of the run
    elapsed: float                     # wall time, over every call of the run
    tokens: int
    tokens_per_second: float           # this call's steps (the run's average if it took none)
    params: int
    deadline_reached: bool = False
    loss: float | None = None          # the last logged training loss of this call (None: no step)
    dev_loss: float | None = None      # this call's last dev evaluation
    compile_seconds: float = 0.0

    @property
    def trained(self) -> bool:
        return self.steps > self.resumed_from

    def timing(self) -> dict[str, Any]:
        """The fields a finished model's record keeps (`lm.distill`'s DONE.json)."""
        return {k: getattr(self, k) for k in ("train_seconds", "tokens_per_second", "steps", "best_step",
                                               "stopped_early")}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resume_step(out: Path) -> int:
    """The step a run folder's last checkpoint reached (0 for a new run)."""
    return Checkpoints(Path(out), read_only=True).latest_step(RESUME_DIR) or 0


class Trainer:
    """One call of the loop on one run folder: its state, and its steps as methods."""

    def __init__(self, out: Path, cfg: ModelConfig, optim: OptimConfig, loop: LoopConfig, data: Batches,
                 dev: Dev | None, *, seed: int, loss: LossConfig, objective: Objective, start_params: Any,
                 keep: Any, deadline: float | None):
        self.out, self.cfg, self.optim, self.loop, self.data, self.dev = Path(out), cfg, optim, loop, data, dev
        self.seed, self.loss, self.objective, self.keep, self.deadline = seed, loss, objective, keep, deadline
        self.t0 = time.perf_counter()
        self.mesh = parallel.make_mesh()
        parallel.check_batch(loop.batch, self.mesh)
        self.tx, self.schedule = make_optimizer(optim)
        # a copy: the step donates its parameter buffers, and the caller's model lives on
        self.params = jax.tree.map(np.array, start_params) if start_params is not None else init_params(cfg, seed)
        self.opt_state = self.tx.init(self.params)
        self.ckpts = Checkpoints(self.out)
        self.start = self.step_no = 0
        self.seconds = self.seconds0 = self.elapsed0 = self.compile_s = 0.0
        self.tokens = self.timed_tokens = 0
        self.best, self.best_step, self.stale = math.inf, 0, 0  # best dev loss, its step, evaluations since
        self.last_loss: float | None = None
        self.dev_loss: float | None = None
        self.pending: list = []

    # ---- the steps of a run ------------------------------------------------------------------
    def restore(self) -> None:
        """Continue from the run folder's last checkpoint, if any."""
        self.start = self.step_no = self.ckpts.latest_step() or 0
        if not self.start:
            return
        tree = {"params": self.params, "opt_state": self.opt_state, "step": np.int64(0)}
        state, meta = self.ckpts.restore(RESUME_DIR, abstract_like(tree, parallel.replicated(self.mesh)))
        self.params, self.opt_state = state["params"], state["opt_state"]
        self.data.restore(meta["data"])
        self.seconds = self.seconds0 = float(meta.get("train_seconds", 0.0))
        self.elapsed0 = float(meta.get("elapsed", 0.0))
        self.tokens = int(meta.get("tokens", 0))
        self.best = float(meta["best_dev_loss"]) if meta.get("best_dev_loss") is not None else math.inf
        self.best_step, self.stale = int(meta.get("best_step", 0)), int(meta.get("stale_evals", 0))

    @property
    def stopped(self) -> bool:
        return bool(self.loop.patience and self.stale >= self.loop.patience)

    def setup(self) -> None:
        """Place the state on the mesh, compile the steps, prepare the objective, open the logs."""
        repl = parallel.replicated(self.mesh)
        self.params, self.opt_state = parallel.put(self.params, repl), parallel.put(self.opt_state, repl)
        self.extra = self.objective.extra(repl)
        if self.keep is not None:
            self.extra["keep"] = parallel.put(self.keep, repl)
        if self.cfg.dropout:
            self.extra["key"] = parallel.put(jax.random.key_data(jax.random.key(self.seed)), repl)
        self.step_fn = make_step(self.cfg, self.loss, self.tx, self.mesh, self.objective, self.keep is not None)
        self.eval_fn = make_eval_step(self.cfg, self.mesh)
        self.objective.prepare(self.data, self.loop.steps - self.start, self.loop.batch, self.loop.quiet)
        cut_metrics(self.out, self.start)  # rows a killed process logged after the checkpoint are logged again
        self.metrics = Metrics(self.out)
        self.bar = tqdm(total=self.loop.steps, initial=self.start, disable=self.loop.quiet, unit="step",
                        desc=self.loop.desc, dynamic_ncols=True)
        self.t_mark = time.perf_counter()

    def step(self) -> None:
        """One optimiser step; the first of a process compiles, and is logged (and timed) apart."""
        b = self.data.next()
        arrays = {"x": b.inputs, "y": b.targets, "m": b.mask} | self.objective.arrays(b, self.data.pools)
        self.params, self.opt_state, losses = self.step_fn(
            self.params, self.opt_state, self.extra, jax.device_put(arrays, parallel.batch_sharded(self.mesh)),
            np.int32(self.step_no))
        self.step_no += 1
        self.tokens += self.tokens_per_step
        self.pending.append(losses)
        if self.step_no == self.start + 1:
            losses[0].block_until_ready()
            self.compile_s = time.perf_counter() - self.t_mark
            self.log(first=True)
        else:
            self.timed_tokens += self.tokens_per_step
        self.bar.update(1)

    @property
    def tokens_per_step(self) -> int:
        return self.loop.batch * self.cfg.context

    def elapsed(self) -> float:
        return round(self.elapsed0 + time.perf_counter() - self.t0, 3)

    def log(self, first: bool = False) -> None:
        """Log the mean of the pending losses; stop on a NaN."""
        vals = np.asarray(jax.device_get(self.pending), np.float64).reshape(len(self.pending), 3)
        now = time.perf_counter()
        if not np.all(np.isfinite(vals)):
            bad = self.step_no - len(vals) + int(np.argmin(np.all(np.isfinite(vals), axis=1)))
            raise TrainingDiverged(
                f"{self.out}: loss is {vals[~np.isfinite(vals)][0]} at step {bad + 1}: training diverged; lower --lr "
                f"(now {self.optim.lr}) or raise --warmup; the last good checkpoint is step "
                f"{self.ckpts.latest_step() or 'none'} in {self.out / RESUME_DIR}")
        mean = vals.mean(axis=0)
        entry: dict[str, Any] = {"step": self.step_no, "loss": round(float(mean[0]), 6)}
        if self.objective.name != "ce":
            entry |= {"ce": round(float(mean[1]), 6), "kl": round(float(mean[2]), 6)}
        entry["lr"] = float(self.schedule(self.step_no - 1))
        if first:
            entry["compile_seconds"] = round(self.compile_s, 3)
        else:
            self.seconds += now - self.t_mark
            entry["tokens_per_s"] = round(len(vals) * self.tokens_per_step / max(now - self.t_mark, 1e-9), 1)
            entry["train_seconds"] = round(self.seconds, 3)
        entry["elapsed"] = self.elapsed()
        self.metrics.write(entry)
        self.pending = []
        self.t_mark = time.perf_counter()  # logging is not training time
        self.last_loss = float(mean[0])
        self.bar.set_postfix(loss=f"{self.last_loss:.4f}", refresh=False)

    def evaluate(self) -> None:
        """Score dev; a new best is saved as `best/STEP`, else patience runs down."""
        nll, n = block_eval(self.eval_fn, self.params, self.dev.packed, self.loop.batch)
        self.dev_loss = nll / n
        entry = {"step": self.step_no, "dev_loss": round(self.dev_loss, 6)}
        if self.dev.chars:
            entry["dev_bpc"] = round(nll / math.log(2) / self.dev.chars, 6)
        self.metrics.write(entry | {"elapsed": self.elapsed()})
        if self.dev_loss < self.best:
            self.best, self.best_step, self.stale = self.dev_loss, self.step_no, 0
            self.ckpts.save(BEST_DIR, self.step_no, {"params": self.params},
                            {"step": self.step_no, "dev_loss": self.dev_loss})
        else:
            self.stale += 1

    def save(self) -> None:
        """The resume checkpoint (and, without dev, the last parameters as the best)."""
        step = self.step_no
        if self.dev is None:
            self.ckpts.save(BEST_DIR, step, {"params": self.params}, {"step": step, "dev_loss": None})
        self.objective.before_save()
        self.ckpts.save(RESUME_DIR, step, {"params": self.params, "opt_state": self.opt_state, "step": np.int64(step)},
                        {"data": self.data.state(), "train_seconds": self.seconds, "elapsed": self.elapsed(),
                         "tokens": self.tokens, "step": step, "best_dev_loss": self._best(),
                         "best_step": self.best_step, "stale_evals": self.stale})

    # ---- the loop ------------------------------------------------------------------------
    def run(self) -> Summary:
        self.restore()
        if self.start >= self.loop.steps or self.stopped:
            self.ckpts.close()
            return self.summary(deadline_reached=False)
        self.setup()
        out_of_time = False
        try:
            while self.step_no < self.loop.steps and not out_of_time and not self.stopped:
                self.step()
                out_of_time = self.deadline is not None and time.perf_counter() >= self.deadline
                self.after_step(out_of_time)
        finally:
            self.bar.close()
            self.metrics.close()
            self.ckpts.close()
        return self.summary(deadline_reached=self.step_no < self.loop.steps and not self.stopped)

    def after_step(self, out_of_time: bool) -> None:
        """Log, evaluate and save when their turn (or the end, or the deadline) comes."""
        step, loop, last = self.step_no, self.loop, self.step_no == self.loop.steps
        at_eval = step % loop.eval_every == 0 or last or out_of_time
        at_save = step % loop.save_every == 0 or last or out_of_time
        if self.pending and (step % loop.log_every == 0 or at_eval or at_save):
            self.log()
        if at_eval and self.dev is not None:
            self.evaluate()
            at_save = at_save or self.stopped
        if at_save:
            self.save()
        if at_eval or at_save:
            self.t_mark = time.perf_counter()  # evaluation and saving are not training time

    def _best(self) -> float | None:
        return self.best if math.isfinite(self.best) else None

    def summary(self, deadline_reached: bool) -> Summary:
        trained = self.seconds - self.seconds0
        rate = self.timed_tokens / trained if trained > 0 else (self.tokens / self.seconds if self.seconds else 0.0)
        return Summary(steps=self.step_no, resumed_from=self.start, best_dev_loss=self._best(),
                       best_step=self.best_step, stopped_early=self.stopped, train_seconds=round(self.seconds, 3),
                       elapsed=self.elapsed() if self.step_no > self.start else self.elapsed0, tokens=self.tokens,
                       tokens_per_second=round(rate, 1), params=count_params(self.params),
                       deadline_reached=deadline_reached, loss=self.last_loss, dev_loss=self.dev_loss,
                       compile_seconds=round(self.compile_s, 3))


def train(out: Path, cfg: ModelConfig, optim: OptimConfig, loop: LoopConfig, data: Batches, dev: Dev | None, *,
          seed: int, loss: LossConfig = LossConfig(), teacher: Teacher | None = None, start_params: Any = None,
          keep: Any = None, deadline: float | None = None) -> Summary:
    """Train (or finish training) one model in `out`; returns its summary. `start_params`: the
    initial parameters (default: drawn from `seed`); `deadline`: a `time.perf_counter()` value
    after which the run stops, evaluated and checkpointed."""
    return Trainer(out, cfg, optim, loop, data, dev, seed=seed, loss=loss, objective=objective_for(teacher, loss),
                   start_params=start_params, keep=keep, deadline=deadline).run()
