"""One distillation run folder and what every stage of the loop reads from it: settings, preset,
snapshot and tokenizer; each model trains in `RUN/models/NAME` through `lm.trainer` and is marked
finished there with `DONE.json` (`lm.run`)."""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lm.corpus import Snapshot
from lm.data import Batches, Packed, Pool, pack, real_pool, token_stream
from lm.losses import LossConfig
from lm.model import ModelConfig
from lm.run import mark_done, read_done, write_run
from lm.scoring import evaluate
from lm.tokenizer import MODEL_FILE, Tokenizer, default_vocab_size, train_tokenizer
from lm.trainer import Dev, LoopConfig, OptimConfig, Teacher, soft_target_mode, train

from lm.distill.config import Preset, Settings


def run_tokenizer(run: Path, settings: Settings, preset: Preset, snapshot: Snapshot, aug_texts: list[str]) -> Tokenizer:
    """RUN/tokenizer.model: SentencePiece on the train split plus the augmented text (never dev or
    test), or the `--teacher` run's (token-level distillation needs one vocabulary)."""
    path = run / MODEL_FILE
    if path.is_file():
        return Tokenizer.load(path)
    if settings.teacher:
        tok = Tokenizer.load(Path(settings.teacher) / MODEL_FILE)
    else:
        real = snapshot.documents("train")
        # the size follows the real text (augmented text repeats it): 512 for gl-ctg, 1024 for
        # tinyshakespeare; the pieces are learnt from both
        size = preset.vocab_size or default_vocab_size(len(snapshot.separator.join(real)))
        tok = train_tokenizer(real + aug_texts, size)
    tok.save(path)
    return tok


@dataclass(frozen=True)
class Workspace:
    run: Path
    snapshot: Snapshot
    settings: Settings
    preset: Preset            # the run's preset with its overrides (`Settings.preset_values`)
    tok: Tokenizer
    quiet: bool
    t0: float                 # when the command started (log times, the report's wall time)

    @property
    def models(self) -> Path:
        return self.run / "models"

    def log(self, msg: str) -> None:
        print(f"[distill {time.perf_counter() - self.t0:6.0f}s] {msg}", file=sys.stderr, flush=True)

    def key(self, split: str) -> str:
        return f"{self.snapshot.name}/{self.snapshot.version}/{split}"

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
        return real_pool(self.tok, self.snapshot.documents("train"), context, self.key("train"))

    def dev(self, context: int) -> Dev | None:
        """Dev text for the curves and best-checkpoint choice during training: the split's text up
        to `eval_chars` (cut at a record boundary), block windows. Final figures: `evaluate`."""
        text = self.snapshot.text("dev")
        if not text:
            return None
        cap = self.preset.eval_chars
        if cap and len(text) > cap:
            cut = text.rfind(self.snapshot.separator, 0, cap)
            text = text[:cut if cut > 0 else cap]
        key = f"{self.snapshot.name}/{self.snapshot.version}/dev/first{len(text)}"
        packed: Packed = pack(token_stream(self.tok, [text], key), context, self.tok.eos_id)
        return Dev(packed, len(text))

    # ---- training --------------------------------------------------------------------------
    def schedule(self, name: str, steps: int, lr: float) -> tuple[OptimConfig, LoopConfig]:
        """Every model of the loop: warm-up over a tenth of its steps, cosine to `steps`, a dev
        evaluation and checkpoint every `eval_every` steps, stopping after `patience` evaluations
        without a new best (the best checkpoint is the model)."""
        every = min(self.preset.eval_every, steps)
        return (OptimConfig(lr=lr, warmup=max(1, steps // 10), decay_steps=steps),
                LoopConfig(steps=steps, batch=self.preset.batch, eval_every=every, save_every=every, log_every=20,
                           desc=name, quiet=self.quiet, patience=self.preset.patience))

    def train(self, name: str, cfg: ModelConfig, schedule: tuple[OptimConfig, LoopConfig], data: Batches,
              dev: Dev | None, *, seed: int, data_used: dict[str, Any], loss: LossConfig = LossConfig(),
              teacher: Teacher | None = None, describe: dict[str, Any] | None = None) -> dict[str, Any]:
        """Train (or finish training) RUN/models/NAME. It gets `tokenizer.model` and a `run.json` like
        `lm.train`'s, with `data` (`lm.run.data_record`: what it trained on) and `distill` (name,
        teacher mode, loss, `describe`)."""
        optim, loop = schedule
        out = self.models / name
        out.mkdir(parents=True, exist_ok=True)
        mode = soft_target_mode(teacher, loss)
        self.tok.save(out / MODEL_FILE)
        write_run(out, cfg, {"batch": loop.batch, "seed": seed, "optim": asdict(optim), "patience": loop.patience},
                  self.tok.describe(), self.snapshot, loop.steps, data=data_used,
                  distill={"name": name, "teacher": mode, **asdict(loss), **(describe or {})})
        return train(out, cfg, optim, loop, data, dev, seed=seed, loss=loss, teacher=teacher)
