"""`python -m lm.train --corpus OUT/NAME --preset P --steps N --out RUN [overrides]`

Trains a Llama-style model on a corpus snapshot's train split and keeps in RUN:

* `tokenizer.model`: SentencePiece trained on the train split (plus `--augmented` text), never on
  dev or test;
* `run.json`: model and training settings, parameter count, `"devices"`, corpus name, version and
  folder, tokenizer (type, vocabulary size, sha256);
* `metrics.jsonl`: one line per `--log-every` steps (`step, loss, lr, tokens_per_s, elapsed`)
  and per dev evaluation (`step, dev_loss` in nats/token, `dev_bpc` over block windows: an
  upper bound of `lm.evaluate`'s sliding-window figure);
* `checkpoints/STEP` (Orbax: parameters, optimiser state, step, RNG, data position) and
  `best/STEP` (the parameters with the lowest dev loss so far).

Running the same command again with a larger `--steps` resumes from the last checkpoint, and N
steps + resume + M steps gives the same parameters as N + M straight (the same compiled step on
the same batches from the same state; bitwise on one machine). A run's settings are fixed when it
is created: on resume only `--steps` and the logging/eval/save cadence may change. The learning
rate warms up linearly for `--warmup` steps, then follows a cosine to `--min-lr-ratio` x `--lr` at
`--decay-steps` (default: the first invocation's `--steps`) and stays there, so extending a run
never rewrites the schedule of the steps already taken.

Every local device is used (data parallel, mesh axis "data"); on a CPU the host is split into
one device per core, the only way XLA keeps every core busy on a small model. `--batch` must be
a multiple of the device count. `--max-seconds` stops the run (evaluated and checkpointed) once
the command has run that long. Exit codes: 0 ok, 1 failure (bad corpus, corrupt checkpoint, NaN loss), 2 usage.
"""
from __future__ import annotations

import time

_STARTED = time.perf_counter()  # before the heavy imports: `--max-seconds` counts the whole command

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from lm import parallel
from lm.compile_cache import enable_compile_cache
from lm.checkpoint import BEST_DIR, RESUME_DIR, Checkpoints, abstract_like
from lm.corpus import Snapshot, open_snapshot, read_texts
from lm.data import Batches, Packed, pack, token_stream
from lm.errors import DataError, TrainingDiverged, UsageError, run_cli
from lm.model import ModelConfig, count_params, init_params, make_apply, preset, token_nll
from lm.tokenizer import MODEL_FILE, Tokenizer, train_tokenizer

RUN_FILE, METRICS_FILE = "run.json", "metrics.jsonl"


@dataclass(frozen=True)
class TrainSettings:
    """Everything fixed at a run's creation besides the model shape."""

    preset: str = "student"
    batch: int = 32
    lr: float = 2e-3
    warmup: int | None = None          # default: min(100, decay_steps // 10)
    decay_steps: int | None = None     # default: the first invocation's --steps
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    beta2: float = 0.99                # small models, short runs (nanoGPT's Shakespeare setting)
    clip: float = 1.0
    seed: int = 0
    vocab_size: int | None = None      # default: from the train split's size
    tokenizer: str = "unigram"
    augmented: str | None = None       # a folder of augmented Parquet; "auto" = VERSION/augmented
    augmented_weight: float = 0.5


MODEL_FLAGS = {"dim": "dim", "layers": "n_layers", "heads": "n_heads", "hidden": "hidden_dim",
               "context": "context", "dtype": "dtype"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lm.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", help="OUT/NAME (follows LATEST) or a version folder; optional on resume")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--steps", type=int, required=True, help="total optimiser steps (larger than the last run's: resume)")
    p.add_argument("--preset", choices=("tiny", "student", "teacher"))
    for flag in ("dim", "layers", "heads", "hidden", "context"):
        p.add_argument(f"--{flag}", type=int)
    p.add_argument("--untied", action="store_true", default=None, help="separate output embedding")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), help="compute dtype (bfloat16 for accelerators)")
    p.add_argument("--batch", type=int, help="sequences per step, across all devices")
    p.add_argument("--lr", type=float)
    p.add_argument("--warmup", type=int)
    p.add_argument("--decay-steps", type=int)
    p.add_argument("--min-lr-ratio", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--beta2", type=float)
    p.add_argument("--clip", type=float, help="gradient clipping by global norm")
    p.add_argument("--seed", type=int)
    p.add_argument("--vocab-size", type=int)
    p.add_argument("--tokenizer", choices=("unigram", "bpe"))
    p.add_argument("--augmented", nargs="?", const="auto",
                   help="also train on augmented text: a Parquet folder (default VERSION/augmented)")
    p.add_argument("--augmented-weight", type=float, help="share of training sequences from augmented text (0.5)")
    p.add_argument("--eval-every", type=int, help="steps between dev evaluations (default steps/10)")
    p.add_argument("--eval-tokens", type=int, default=1 << 17, help="dev tokens per evaluation (cap)")
    p.add_argument("--save-every", type=int, help="steps between checkpoints (default: --eval-every)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--max-seconds", type=float,
                   help="stop (evaluate, checkpoint) once the command has run this long; rerun to go on")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error("--steps must be at least 1")
    return args


def make_optimizer(s: TrainSettings, decay_steps: int, warmup: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=s.lr, warmup_steps=warmup,
        decay_steps=max(decay_steps, warmup + 1), end_value=s.lr * s.min_lr_ratio)
    # decay matrices only, not norm weights
    decay_mask = lambda params: jax.tree.map(lambda x: x.ndim >= 2, params)  # noqa: E731
    tx = optax.chain(optax.clip_by_global_norm(s.clip),
                     optax.adamw(schedule, b1=0.9, b2=s.beta2, weight_decay=s.weight_decay, mask=decay_mask))
    return tx, schedule


def make_train_step(cfg: ModelConfig, tx: optax.GradientTransformation, mesh: jax.sharding.Mesh):
    """One jitted step: loss, gradients (all-reduced by XLA across the mesh), AdamW update."""
    apply = make_apply(cfg)

    def loss_fn(params, x, y, m):
        nll = token_nll(apply(params, x), y)
        return jnp.sum(nll * m) / jnp.maximum(jnp.sum(m), 1.0)

    def step(params, opt_state, x, y, m):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y, m)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    repl, data = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    return jax.jit(step, in_shardings=(repl, repl, data, data, data), out_shardings=(repl, repl, repl),
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


class Run:
    """A run folder: its settings, tokenizer, data, and the training loop over them."""

    def __init__(self, args: argparse.Namespace):
        # --max-seconds counts the whole command (from before `import jax`) when run as one
        self.t0 = _STARTED if __name__ == "__main__" else time.perf_counter()
        self.out = Path(args.out)
        self.args = args
        self.meta_path = self.out / RUN_FILE
        self.mesh = parallel.make_mesh()
        stored = self._load_stored()
        self.settings, self.cfg_overrides, self.snapshot = self._resolve(stored)
        self.fixed = stored.get("fixed", {}) if stored else {}
        self.resuming = stored is not None

    # ---- settings -------------------------------------------------------------------------
    def _load_stored(self) -> dict[str, Any] | None:
        if not self.meta_path.is_file():
            if self.out.is_dir() and (self.out / RESUME_DIR).is_dir():
                raise DataError(f"{self.out} has checkpoints but no {RUN_FILE}: not a run folder this tool made")
            return None
        try:
            return json.loads(self.meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{self.meta_path} cannot be read ({exc}); it is not a valid run") from exc

    def _resolve(self, stored: dict[str, Any] | None) -> tuple[TrainSettings, dict[str, Any], Snapshot]:
        a = self.args
        given = {f.name: getattr(a, f.name) for f in fields(TrainSettings) if getattr(a, f.name, None) is not None}
        if given.get("augmented", "auto") != "auto":
            given["augmented"] = str(Path(given["augmented"]).resolve())  # resumable from anywhere
        model_given = {MODEL_FLAGS[k]: getattr(a, k) for k in MODEL_FLAGS if getattr(a, k) is not None}
        if a.untied:
            model_given["tie_embeddings"] = False
        if stored is None:
            if not a.corpus:
                raise UsageError(f"--corpus is required to start a new run in {self.out}")
            settings = TrainSettings(**{**asdict(TrainSettings()), **given})
            snapshot = open_snapshot(a.corpus)
            return settings, model_given, snapshot
        # resume: every fixed setting given again must agree with the stored one
        settings = TrainSettings(**stored["train"])
        for k, v in given.items():
            if getattr(settings, k) != v:
                raise UsageError(f"{self.out} was created with --{k.replace('_', '-')} {getattr(settings, k)}; "
                                 f"a run's settings are fixed (only --steps can grow): start a new --out")
        for k, v in model_given.items():
            if stored["model"].get(k) != v:
                raise UsageError(f"{self.out} was created with model {k}={stored['model'].get(k)}; "
                                 f"a run's shape is fixed: start a new --out")
        snapshot = open_snapshot(stored["corpus"]["path"])
        if a.corpus:
            other = open_snapshot(a.corpus)
            if other.name != snapshot.name:
                raise UsageError(f"{self.out} trains on corpus {snapshot.name!r}, not {other.name!r}")
        return settings, stored["model"], snapshot

    # ---- tokenizer and data ---------------------------------------------------------------
    def tokenizer(self) -> Tokenizer:
        path = self.out / MODEL_FILE
        if path.is_file():
            return Tokenizer.load(path)
        s = self.settings
        texts = self.snapshot.documents("train")  # train only: dev and test never shape the vocabulary
        if s.augmented:
            texts = texts + self.augmented_texts()
        tok = train_tokenizer(texts, s.vocab_size, s.tokenizer)
        self.out.mkdir(parents=True, exist_ok=True)
        tok.save(path)
        return tok

    def augmented_texts(self) -> list[str]:
        a = self.settings.augmented
        folder = self.snapshot.augmented_dir() if a == "auto" else Path(a)
        return read_texts(folder)

    def _key(self, split: str) -> str:
        return f"{self.snapshot.name}/{self.snapshot.version}/{split}"

    # ---- the loop ---------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        a, s = self.args, self.settings
        parallel.check_batch(s.batch, self.mesh)
        tok = self.tokenizer()
        if self.resuming:
            cfg = ModelConfig(**self.cfg_overrides)  # the stored shape, whole
        else:
            cfg = preset(s.preset, **{**self.cfg_overrides, "vocab_size": tok.vocab_size})
        if cfg.vocab_size != tok.vocab_size:
            raise DataError(f"tokenizer has {tok.vocab_size} pieces but the run's model expects {cfg.vocab_size}")

        train_docs = self.snapshot.documents("train")
        if not any(d.strip() for d in train_docs):
            raise DataError(f"the train split of {self.snapshot.root} is empty")
        real = pack(token_stream(tok, train_docs, self._key("train")), cfg.context, tok.eos_id)
        aug = None
        if s.augmented:
            aug_texts = self.augmented_texts()
            aug = pack(token_stream(tok, [self.snapshot.separator.join(aug_texts)], None), cfg.context, tok.eos_id)
        batches = Batches(real, s.batch, s.seed, aug, s.augmented_weight)

        dev_docs = self.snapshot.documents("dev")
        dev = None
        dev_chars = len(self.snapshot.separator.join(dev_docs))
        if dev_chars:
            dev = pack(token_stream(tok, dev_docs, self._key("dev")), cfg.context, tok.eos_id)
            cap = max(1, a.eval_tokens // cfg.context)
            dev_complete = len(dev) <= cap
            dev = Packed(dev.tokens[:cap], dev.mask[:cap])
        else:
            print(f"warning: dev split of {self.snapshot.root} is empty: no dev evaluation, the last "
                  "checkpoint is also the best", file=sys.stderr)

        decay = self.fixed.get("decay_steps", s.decay_steps or a.steps)
        warmup = self.fixed.get("warmup", s.warmup if s.warmup is not None else min(100, decay // 10))
        tx, schedule = make_optimizer(s, decay, warmup)
        params = init_params(cfg, s.seed)
        opt_state = tx.init(params)
        rng = jax.random.key_data(jax.random.key(s.seed))
        repl = parallel.replicated(self.mesh)

        ckpts = Checkpoints(self.out)
        start = ckpts.latest_step() or 0
        elapsed0, best = 0.0, math.inf
        if start:
            tree = {"params": params, "opt_state": opt_state, "step": np.int64(0), "rng": np.asarray(rng)}
            state, meta = ckpts.restore(RESUME_DIR, abstract_like(tree, repl))
            params, opt_state, rng = state["params"], state["opt_state"], state["rng"]
            batches.restore(meta["data"])
            elapsed0, best = float(meta.get("elapsed", 0.0)), float(meta.get("best_dev_loss", math.inf))
        self._write_run_json(cfg, tok, count_params(params), warmup, decay, start, a.steps)
        if start >= a.steps:
            print(f"{self.out}: already at step {start} (asked for {a.steps}); nothing to do")
            ckpts.close()
            return {"step": start, "resumed_from": start}

        params, opt_state = parallel.put(params, repl), parallel.put(opt_state, repl)
        step_fn = make_train_step(cfg, tx, self.mesh)
        eval_fn = make_eval_step(cfg, self.mesh)
        data_sh = parallel.batch_sharded(self.mesh)
        eval_every = a.eval_every or max(1, a.steps // 10)
        save_every = a.save_every or eval_every
        tokens_per_step = s.batch * cfg.context

        metrics = open(self.out / METRICS_FILE, "a", encoding="utf-8")
        bar = tqdm(total=a.steps, initial=start, disable=a.quiet, unit="step", dynamic_ncols=True)
        t_start = time.perf_counter()
        t_last, pending = t_start, []
        step, last_loss, dev_loss = start, math.nan, None

        def emit(entry: dict[str, Any]) -> None:
            metrics.write(json.dumps(entry) + "\n")
            metrics.flush()

        def elapsed() -> float:
            return round(elapsed0 + time.perf_counter() - t_start, 3)

        def flush_losses() -> float:
            nonlocal pending, t_last
            losses = np.asarray(jax.device_get(pending), dtype=np.float64)
            now = time.perf_counter()
            if losses.size and not np.all(np.isfinite(losses)):
                bad = step - len(losses) + int(np.argmin(np.isfinite(losses)))
                raise TrainingDiverged(
                    f"loss is {losses[~np.isfinite(losses)][0]} at step {bad + 1}: training diverged; "
                    f"lower --lr (now {s.lr}) or raise --warmup; the last good checkpoint is step "
                    f"{ckpts.latest_step() or 'none'} in {self.out / RESUME_DIR}")
            mean = float(losses.mean()) if losses.size else math.nan
            if losses.size:
                emit({"step": step, "loss": round(mean, 6), "lr": float(schedule(step - 1)),
                      "tokens_per_s": round(len(losses) * tokens_per_step / max(now - t_last, 1e-9), 1),
                      "elapsed": elapsed()})
            pending = []
            t_last = time.perf_counter()  # logging is not training time
            return mean

        try:
            while step < a.steps:
                x, y, m = batches.next()
                params, opt_state, loss = step_fn(params, opt_state, *(jax.device_put(v, data_sh) for v in (x, y, m)))
                rng = jax.random.key_data(jax.random.split(jax.random.wrap_key_data(rng))[0])
                step += 1
                pending.append(loss)
                if step == start + 1:
                    loss.block_until_ready()  # first step compiles: keep it out of tokens/s
                    last_loss = flush_losses()
                bar.update(1)
                out_of_time = a.max_seconds is not None and time.perf_counter() - self.t0 >= a.max_seconds
                at_eval = step % eval_every == 0 or step == a.steps or out_of_time
                at_save = step % save_every == 0 or step == a.steps or out_of_time
                if step % a.log_every == 0 or at_eval or at_save:
                    if pending:
                        last_loss = flush_losses()
                    bar.set_postfix(loss=f"{last_loss:.4f}", refresh=False)
                if at_eval and dev is not None:
                    nll, n = block_eval(eval_fn, params, dev, s.batch)
                    dev_loss = nll / n
                    entry = {"step": step, "dev_loss": round(dev_loss, 6), "elapsed": elapsed()}
                    if dev_complete:
                        entry["dev_bpc"] = round(nll / math.log(2) / dev_chars, 6)
                    emit(entry)
                    if dev_loss < best:
                        best = dev_loss
                        ckpts.save(BEST_DIR, step, {"params": params}, {"step": step, "dev_loss": dev_loss})
                if at_save:
                    if dev is None:
                        ckpts.save(BEST_DIR, step, {"params": params}, {"step": step, "dev_loss": None})
                    ckpts.save(RESUME_DIR, step,
                               {"params": params, "opt_state": opt_state, "step": np.int64(step), "rng": rng},
                               {"data": batches.state(), "elapsed": elapsed(), "step": step,
                                "best_dev_loss": best if math.isfinite(best) else None})
                if at_eval or at_save:
                    t_last = time.perf_counter()  # evaluation and saving are not training time
                if out_of_time:
                    print(f"{self.out}: --max-seconds {a.max_seconds:g} reached at step {step} of {a.steps}",
                          file=sys.stderr)
                    break
        finally:
            bar.close()
            metrics.close()
            ckpts.close()
        summary = {"step": step, "resumed_from": start, "loss": last_loss, "dev_loss": dev_loss,
                   "best_dev_loss": best if math.isfinite(best) else None, "elapsed": elapsed()}
        print(f"{self.out}: step {step}, loss {last_loss:.4f}"
              + (f", dev loss {dev_loss:.4f} nats/token (best {best:.4f})" if dev_loss is not None else ""))
        return summary

    def _write_run_json(self, cfg: ModelConfig, tok: Tokenizer, n_params: int, warmup: int, decay: int,
                        start: int, steps: int) -> None:
        prev = self._load_stored() or {}
        info = {
            "model": cfg.to_dict(),
            "train": asdict(self.settings),
            "fixed": {"warmup": warmup, "decay_steps": decay},
            "steps": max(steps, start),
            "params": n_params,
            "devices": int(self.mesh.devices.size),
            "platform": jax.devices()[0].platform,
            "device_kind": jax.devices()[0].device_kind,
            "corpus": {"name": self.snapshot.name, "version": self.snapshot.version,
                       "path": str(self.snapshot.root.resolve()), "separator": self.snapshot.separator},
            "tokenizer": tok.describe() | {"type": prev.get("tokenizer", {}).get("type") or tok.model_type or self.settings.tokenizer},
            "jax": jax.__version__,
            "resumes": prev.get("resumes", []) + ([start] if start else []),
        }
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        tmp.replace(self.meta_path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parallel.use_cpu_cores()
    enable_compile_cache()
    Run(args).train()
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
