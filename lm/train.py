"""`python -m lm.train --corpus OUT/NAME --preset P --steps N --out RUN [overrides]`

Trains a Llama-style model on a corpus snapshot's train split and keeps in RUN:

* `tokenizer.model`: SentencePiece trained on the train split's real text, never on dev, test or
  `--augmented` text (so runs with and without it share one vocabulary);
* `run.json`: model and training settings, parameter count, `"devices"`, corpus name, version and
  folder, tokenizer (type, vocabulary size, sha256);
* `metrics.jsonl`: one line per `--log-every` steps (`step, loss, lr, tokens_per_s, train_seconds, elapsed`)
  and per dev evaluation (`step, dev_loss` in nats/token, `dev_bpc` over block windows: an
  upper bound of `lm.evaluate`'s sliding-window figure); see `lm.trainer`;
* `checkpoints/STEP` (Orbax: parameters, optimiser state, step, data position) and
  `best/STEP` (the parameters with the lowest dev loss so far).

Running the same command again with a larger `--steps` resumes from the last checkpoint, and N
steps + resume + M steps gives the same parameters as N + M straight (the same compiled step on
the same batches from the same state; bitwise on one machine). A run's settings are fixed when it
is created: on resume only `--steps` and the logging/eval/save cadence may change. The learning
rate warms up linearly for `--warmup` steps (default: a tenth of the schedule, at least 1 and at
most 100: `lm.fit.warmup_for`), then follows a cosine to `--min-lr-ratio` x `--lr` at
`--decay-steps` (default: the first invocation's `--steps`) and stays there, so extending a run
never rewrites the schedule of the steps already taken. With `--patience`, a run that stopped
early is done: running it again says so and exits 0.

Every local device is used (data parallel, mesh axis "data"); on a CPU the host is split into
one device per core, the only way XLA keeps every core busy on a small model. `--batch` must be
a multiple of the device count. `--max-seconds` stops the run (evaluated and checkpointed) once
the command has run that long. Exit codes: 0 ok, 1 failure (bad corpus, corrupt checkpoint, NaN loss), 2 usage, 75 RUN is in
use by another command (it is locked for the whole command: `common.lock`).
"""
from __future__ import annotations

import time

_STARTED = time.perf_counter()  # before the heavy imports: `--max-seconds` counts the whole command

import argparse
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from common.lock import RunLock
from lm import parallel
from lm.checkpoint import RESUME_DIR
from lm.corpus import Snapshot, augmenter_kinds, open_snapshot, read_columns
from lm.data import Batches, Pool, pack, token_stream
from lm.errors import DataError, UsageError, first_line, run_cli
from lm.fit import TrainSettings, dev_set, optim_for, real_tokenizer, train_into, train_pool
from lm.model import ModelConfig, preset
from lm.run import check_fixed, data_record, read_run
from lm.tokenizer import MODEL_FILE, Tokenizer
from lm.trainer import Dev, LoopConfig, OptimConfig, Summary, resume_step

MODEL_FLAGS = {"dim": "dim", "layers": "n_layers", "heads": "n_heads", "hidden": "hidden_dim",
               "context": "context", "dtype": "dtype", "dropout": "dropout"}
OPTIM_FLAGS = tuple(f.name for f in fields(OptimConfig))
RUN_FLAGS = tuple(f.name for f in fields(TrainSettings) if f.name != "optim")


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
    p.add_argument("--dropout", type=float, help="dropout on the embeddings and residual branches (0)")
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
                   help="also train on augmented text: a Parquet folder (default VERSION/augmented); "
                        "noise variants are left out (never a target; lm.distill reads them as input)")
    p.add_argument("--augmented-weight", type=float, help="share of training sequences from augmented text (0.5)")
    p.add_argument("--eval-every", type=int, help="steps between dev evaluations (default steps/10)")
    p.add_argument("--eval-tokens", type=int, default=1 << 17, help="dev tokens per evaluation (cap)")
    p.add_argument("--save-every", type=int, help="steps between checkpoints (default: --eval-every)")
    p.add_argument("--patience", type=int,
                   help="stop after this many dev evaluations without a new best (the best checkpoint is kept)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--max-seconds", type=float,
                   help="stop (evaluate, checkpoint) once the command has run this long; rerun to go on")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error("--steps must be at least 1")
    return args


def _given(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


class Run:
    """A run folder of `lm.train`: its settings, tokenizer and data, trained by `lm.trainer`."""

    def __init__(self, args: argparse.Namespace):
        self.out = Path(args.out)
        self.args = args
        stored = read_run(self.out)
        if stored is None and self.out.is_dir() and (self.out / RESUME_DIR).is_dir():
            raise DataError(f"{self.out} has checkpoints but no run.json: not a run folder this tool made")
        self.stored = stored
        self.settings, self.model_given, self.snapshot = self._resolve(stored)
        # every value is checked before any work (a tokenizer trained, a folder made)
        self.loop = self._loop()
        if stored is None:
            preset(self.settings.preset, **{**self.model_given, "vocab_size": 1})

    def _loop(self) -> LoopConfig:
        a = self.args
        eval_every = a.eval_every if a.eval_every is not None else max(1, a.steps // 10)
        save_every = a.save_every if a.save_every is not None else eval_every
        return LoopConfig(steps=a.steps, batch=self.settings.batch, eval_every=eval_every, save_every=save_every,
                          log_every=a.log_every, quiet=a.quiet, patience=a.patience)

    def _resolve(self, stored: dict[str, Any] | None) -> tuple[TrainSettings, dict[str, Any], Snapshot]:
        a = self.args
        given = _given(a, RUN_FLAGS)
        if given.get("augmented", "auto") != "auto":
            given["augmented"] = str(Path(given["augmented"]).resolve())  # resumable from anywhere
        optim_given = _given(a, OPTIM_FLAGS)
        model_given = {MODEL_FLAGS[k]: getattr(a, k) for k in MODEL_FLAGS if getattr(a, k) is not None}
        if a.untied:
            model_given["tie_embeddings"] = False
        if stored is None:
            if not a.corpus:
                raise UsageError(f"--corpus is required to start a new run in {self.out}")
            # the schedule is fixed at creation: extending a run never rewrites the steps taken
            return TrainSettings(optim=optim_for(a.steps, **optim_given), **given), model_given, open_snapshot(a.corpus)
        # resume: every fixed setting given again must agree with the stored one
        if "distill" in stored:  # its objective, data mixture and teacher are lm.distill's to resume
            raise UsageError(f"{self.out} is a model lm.distill trained ({stored['distill'].get('name')!r}); "
                             "lm.train does not resume it: re-run lm.distill, or give a new --out")
        try:
            settings = TrainSettings.from_dict(stored["train"])
        except (KeyError, TypeError) as exc:
            raise DataError(f"{self.out / 'run.json'} is not an lm.train run ({first_line(exc)})") from None
        check_fixed(self.out, stored["train"], given)
        check_fixed(self.out, stored["train"]["optim"], optim_given)
        check_fixed(self.out, stored["model"], model_given, flag=lambda k: f"model {k}")
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
        tok = real_tokenizer(self.snapshot, self.settings.vocab_size, self.settings.tokenizer)
        self.out.mkdir(parents=True, exist_ok=True)
        tok.save(path)
        return tok

    def augmented_folder(self) -> Path:
        a = self.settings.augmented
        return self.snapshot.augmented_dir() if a == "auto" else Path(a)

    def augmented_rows(self) -> list[dict[str, Any]]:
        """The augmented variants trained on as targets: every one but noise, which is never a
        target (its clean parent is; `lm.distill` reads noise as input)."""
        folder = self.augmented_folder()
        kinds = augmenter_kinds(folder)
        rows = read_columns(folder, ["id", "text"], ("parent_id", "augmenter"))
        return [r for r in rows if r["text"] and kinds.get(r["augmenter"], r["augmenter"]) != "noise"]

    def augmented_texts(self) -> list[str]:
        return [r["text"] for r in self.augmented_rows()]

    def data(self) -> dict[str, Any]:
        """run.json's `data`: the whole train split, plus the augmented variants when used."""
        return data_record(self.snapshot, ["train"], None, self.augmented_rows() if self.settings.augmented else None)

    def batches(self, tok: Tokenizer, cfg: ModelConfig) -> Batches:
        s = self.settings
        real = train_pool(self.snapshot, tok, cfg.context)
        if not s.augmented:
            return Batches(real, s.batch, s.seed)
        text = self.snapshot.separator.join(self.augmented_texts())
        aug = Pool("augmented", pack(token_stream(tok, [text], None), cfg.context, tok.eos_id))
        return Batches(real, s.batch, s.seed, [aug], share=s.augmented_weight)

    def dev(self, tok: Tokenizer, cfg: ModelConfig) -> Dev | None:
        dev = dev_set(self.snapshot, tok, cfg.context, max_tokens=self.args.eval_tokens)
        if dev is None:
            print(f"warning: dev split of {self.snapshot.root} is empty: no dev evaluation, the last "
                  "checkpoint is also the best", file=sys.stderr)
        return dev

    # ---- training -------------------------------------------------------------------------
    def train(self, started: float | None = None) -> Summary | None:
        """Train to `--steps`; `started`: when the command started (`--max-seconds` counts from it).
        None when the run was already at `--steps`."""
        a, s = self.args, self.settings
        parallel.check_batch(s.batch, parallel.make_mesh())
        tok = self.tokenizer()
        if self.stored is not None:
            cfg = ModelConfig(**self.model_given)  # the stored shape, whole
        else:
            cfg = preset(s.preset, **{**self.model_given, "vocab_size": tok.vocab_size})
        if cfg.vocab_size != tok.vocab_size:
            raise DataError(f"tokenizer has {tok.vocab_size} pieces but the run's model expects {cfg.vocab_size}")
        data, dev = self.batches(tok, cfg), self.dev(tok, cfg)
        start = resume_step(self.out)
        if start >= a.steps:
            print(f"{self.out}: already at step {start} (asked for {a.steps}); nothing to do")
            return None
        prev = self.stored or {}
        t0 = started if started is not None else time.perf_counter()
        deadline = t0 + a.max_seconds if a.max_seconds is not None else None
        resumes = prev.get("resumes", []) + ([start] if start else [])
        summary = train_into(self.out, cfg, tok, self.snapshot, s, self.loop, data, dev, deadline=deadline,
                             run_info={"resumes": resumes, "data": self.data()})
        self.report(summary)
        return summary

    def report(self, summary: Summary) -> None:
        """One line of where the run stands, and why it stopped short of `--steps` if it did."""
        a = self.args
        if summary.stopped_early and not summary.trained:
            print(f"{self.out}: the run is done: it stopped early at step {summary.steps} (no better dev loss in "
                  f"{a.patience} evaluations; best at step {summary.best_step}); nothing to do")
            return
        if summary.stopped_early:
            print(f"{self.out}: stopped at step {summary.steps}: no better dev loss in {a.patience} evaluations "
                  f"(best at step {summary.best_step})", file=sys.stderr)
        if summary.deadline_reached:
            print(f"{self.out}: --max-seconds {a.max_seconds:g} reached at step {summary.steps} of {a.steps}",
                  file=sys.stderr)
        dev_loss, best = summary.dev_loss, summary.best_dev_loss
        print(f"{self.out}: step {summary.steps}, loss {summary.loss:.4f}"
              + (f", dev loss {dev_loss:.4f} nats/token (best {best:.4f})" if dev_loss is not None else ""))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parallel.start_command()
    with RunLock(args.out):  # one command per run folder: a second exits 75 (common.lock)
        # --max-seconds counts the whole command (from before `import jax`) when run as one
        Run(args).train(_STARTED if __name__ == "__main__" else None)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
