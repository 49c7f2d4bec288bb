"""One distillation run folder and what every stage of the loop reads from it: settings (the
preset's values included), snapshot and tokenizer; each model trains in `RUN/models/NAME` through `lm.trainer` and is marked
finished there with `DONE.json` (`lm.run`)."""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common.files import read_json
from lm.checkpoint import BEST_DIR, RESUME_DIR, Checkpoints, verify
from lm.corpus import Snapshot
from lm.data import Batches, Pool
from lm.errors import UsageError
from lm.fit import TrainSettings, dev_set, optim_for, real_tokenizer, split_key, train_into, train_pool
from lm.losses import LossConfig
from lm.model import ModelConfig
from lm.objective import objective_for
from lm.run import mark_done, read_done
from lm.scoring import evaluate
from lm.tokenizer import MODEL_FILE, Tokenizer
from lm.trainer import Dev, LoopConfig, OptimConfig, Summary, Teacher

from lm.distill.config import Settings


def check_teacher(path: Path) -> None:
    """`--teacher RUN` before any work: one of our run folders (a run.json describing a model, its
    tokenizer.model) with a checkpoint to load, its files as saved (`lm.checkpoint.verify`). A
    UsageError in one line otherwise; a corrupt checkpoint is a CheckpointError."""
    where = f"--teacher {path}"
    hint = "give one of our run folders (python -m lm.train --out RUN, or lm.distill's RUN/models/NAME)"
    if not path.is_dir():
        raise UsageError(f"{where}: {'not a folder' if path.exists() else 'no such folder'}; {hint}")
    try:
        info = read_json(path / "run.json")
    except FileNotFoundError:
        raise UsageError(f"{where}: not a run folder of ours (no run.json); {hint}") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{where}: run.json cannot be read ({type(exc).__name__}); {hint}") from None
    if not isinstance(info, dict) or not isinstance(info.get("model"), dict):
        raise UsageError(f"{where}: run.json describes no model; {hint}")
    if not (path / MODEL_FILE).is_file():
        raise UsageError(f"{where}: the run has no {MODEL_FILE} (its tokenizer, which the students adopt); {hint}")
    ckpts = Checkpoints(path, read_only=True)
    which = BEST_DIR if ckpts.latest_step(BEST_DIR) is not None else RESUME_DIR
    step = ckpts.latest_step(which)
    if step is None:
        raise UsageError(f"{where}: the run has no checkpoint yet ({BEST_DIR}/ or {RESUME_DIR}/): train it first")
    verify(path / which / str(step))


def check_teacher_hf(path: Path) -> None:
    """`--teacher-hf PATH` before any work: a folder `lm.hf_model.HFModel` loads, else a UsageError."""
    from lm.hf_model import folder_problem

    if problem := folder_problem(path):
        raise UsageError(f"--teacher-hf {path}: {problem}")


def run_tokenizer(run: Path, settings: Settings, snapshot: Snapshot) -> Tokenizer:
    """RUN/tokenizer.model: SentencePiece on the train split's real text (`lm.fit.real_tokenizer`),
    or the `--teacher` run's (token-level distillation needs one vocabulary)."""
    path = run / MODEL_FILE
    if path.is_file():
        return Tokenizer.load(path)
    if settings.teacher:
        tok = Tokenizer.load(Path(settings.teacher) / MODEL_FILE)
    else:
        tok = real_tokenizer(snapshot, settings.vocab_size)
    tok.save(path)
    return tok


@dataclass(frozen=True)
class Workspace:
    run: Path
    snapshot: Snapshot
    settings: Settings        # the options given, the preset's values for the rest
    tok: Tokenizer
    quiet: bool
    t0: float                 # when the command started (log times, the report's wall time)

    @property
    def models(self) -> Path:
        return self.run / "models"

    def log(self, msg: str) -> None:
        print(f"[distill {time.perf_counter() - self.t0:6.0f}s] {msg}", file=sys.stderr, flush=True)

    def key(self, split: str) -> str:
        return split_key(self.snapshot, split)

    def done(self, name: str) -> dict[str, Any] | None:
        return read_done(self.models / name)

    def mark_done(self, name: str, info: dict[str, Any]) -> dict[str, Any]:
        return mark_done(self.models / name, info)

    def evaluate(self, model: Any) -> dict[str, Any]:
        """Final figures: bits per character of real dev and test text (`lm.scoring.evaluate`)."""
        dev = evaluate(model, "dev", str(self.snapshot.root))
        test = evaluate(model, "test", str(self.snapshot.root))
        return {"dev_bits_per_char": dev["bits_per_char"], "test_bits_per_char": test["bits_per_char"],
                "dev_nats_per_char": dev["nats_per_char"], "test_nats_per_char": test["nats_per_char"]}

    # ---- data ------------------------------------------------------------------------------
    def real(self, context: int) -> Pool:
        return train_pool(self.snapshot, self.tok, context)

    def dev(self, context: int) -> Dev | None:
        """Dev text for the curves and best-checkpoint choice during training: the split's text up
        to `eval_chars` (cut at a record boundary). Final figures: `evaluate`."""
        return dev_set(self.snapshot, self.tok, context, max_chars=self.settings.eval_chars)

    # ---- training --------------------------------------------------------------------------
    def schedule(self, name: str, steps: int, lr: float) -> tuple[OptimConfig, LoopConfig]:
        """Every model of the loop: warm-up over a tenth of its steps, cosine to `steps`, a dev
        evaluation and checkpoint every `eval_every` steps, stopping after `patience` evaluations
        without a new best (the best checkpoint is the model)."""
        every = min(self.settings.eval_every, steps)
        return (optim_for(steps, lr=lr),
                LoopConfig(steps=steps, batch=self.settings.batch, eval_every=every, save_every=every, log_every=20,
                           desc=name, quiet=self.quiet, patience=self.settings.patience))

    def train(self, name: str, cfg: ModelConfig, schedule: tuple[OptimConfig, LoopConfig], data: Batches,
              dev: Dev | None, *, seed: int, data_used: dict[str, Any], loss: LossConfig = LossConfig(),
              teacher: Teacher | None = None, describe: dict[str, Any] | None = None) -> Summary:
        """Train (or finish training) RUN/models/NAME (`lm.fit.train_into`): a run folder like
        `lm.train`'s, whose `run.json` adds `data` (`lm.run.data_record`: what it trained on) and
        `distill` (name, objective, loss, `describe`)."""
        optim, loop = schedule
        settings = TrainSettings(optim=optim, preset=None, batch=loop.batch, seed=seed, vocab_size=self.tok.vocab_size,
                                 tokenizer=self.tok.model_type)
        objective = objective_for(teacher, loss).name
        return train_into(self.models / name, cfg, self.tok, self.snapshot, settings, loop, data, dev, loss=loss,
                          teacher=teacher, run_info={"data": data_used, "distill": {
                              "name": name, "teacher": objective, **asdict(loss), **(describe or {})}})
