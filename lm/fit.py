"""Train one model into one run folder: the one way a run folder is made.

`lm.train`, every model of `lm.distill` and `lm.ship.prune` call `train_into`: the folder gets
the tokenizer (`tokenizer.model`), `run.json` with the same `train` settings (`TrainSettings`)
whoever made it, and the checkpoints and metrics of `lm.trainer`. The pieces every caller needs
the same way live here too: the token-cache key of a split, the real train pool, the dev set
scored during training, and the learning-rate schedule's default warm-up.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lm.corpus import Snapshot
from lm.data import Batches, Packed, Pool, pack, real_pool, token_stream
from lm.errors import DataError, UsageError
from lm.losses import LossConfig
from lm.model import ModelConfig
from lm.run import write_run
from lm.tokenizer import MODEL_FILE, Tokenizer, train_tokenizer
from lm.trainer import Dev, LoopConfig, OptimConfig, Summary, Teacher, train


@dataclass(frozen=True)
class TrainSettings:
    """Everything fixed at a run's creation besides the model shape (`run.json`'s `train`)."""

    optim: OptimConfig
    preset: str | None = "student"     # the lm.model preset the shape started from (None: given whole)
    batch: int = 32
    seed: int = 0
    vocab_size: int | None = None      # default: from the train split's size
    tokenizer: str | None = "unigram"
    augmented: str | None = None       # a folder of augmented Parquet; "auto" = VERSION/augmented
    augmented_weight: float = 0.5

    def __post_init__(self) -> None:
        if self.batch < 1 or self.seed < 0:
            raise UsageError(f"--batch must be at least 1 and --seed at least 0, not {self.batch} and {self.seed}")
        if self.vocab_size is not None and self.vocab_size < 1:  # too few for the text: the tokenizer says
            raise UsageError(f"--vocab-size must be positive, not {self.vocab_size}")
        if not 0 <= self.augmented_weight < 1:
            raise UsageError(f"--augmented-weight must be in [0, 1), not {self.augmented_weight}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainSettings":
        return cls(**{**d, "optim": OptimConfig(**d["optim"])})


def warmup_for(steps: int) -> int:
    """The default warm-up: a tenth of the schedule, at least one step, at most 100."""
    return max(1, min(100, steps // 10))


def optim_for(steps: int, **given: Any) -> OptimConfig:
    """AdamW's settings for a schedule of `steps` (cosine to `decay_steps`, default `steps`), with
    the warm-up of `warmup_for` unless `given` names one."""
    decay = given.pop("decay_steps", None) or steps
    return OptimConfig(**{"warmup": warmup_for(decay), **given, "decay_steps": decay})


def real_tokenizer(snapshot: Snapshot, vocab_size: int | None = None, model_type: str = "unigram") -> Tokenizer:
    """SentencePiece on the train split's real text alone: never dev or test, and never augmented
    text, so every arm of a comparison reads the same vocabulary whatever its data. The size
    follows the text (`lm.tokenizer.default_vocab_size`) unless given."""
    return train_tokenizer(snapshot.documents("train"), vocab_size, model_type)


def split_key(snapshot: Snapshot, split: str) -> str:
    """The token cache's key of a split's text (`lm.data.token_stream`)."""
    return f"{snapshot.name}/{snapshot.version}/{split}"


def train_pool(snapshot: Snapshot, tok: Tokenizer, context: int) -> Pool:
    """The whole train split, documents packed with EOS between them."""
    docs = snapshot.documents("train")
    if not any(d.strip() for d in docs):
        raise DataError(f"the train split of {snapshot.root} is empty")
    return real_pool(tok, docs, context, split_key(snapshot, "train"))


def dev_set(snapshot: Snapshot, tok: Tokenizer, context: int, *, max_tokens: int | None = None,
            max_chars: int | None = None) -> Dev | None:
    """Dev text scored during training (curves, best checkpoint, early stopping); None when the
    split is empty. By default its documents, packed, at most `max_tokens` of them (`dev_bpc` is
    logged when none was cut); with `max_chars`, its text as one document, cut at a record
    boundary to at most that many characters (0: not cut). Final figures score all of dev: `lm.scoring.evaluate`."""
    if max_chars is not None:
        text = snapshot.text("dev")
        if not text:
            return None
        if max_chars and len(text) > max_chars:
            cut = text.rfind(snapshot.separator, 0, max_chars)
            text = text[:cut if cut > 0 else max_chars]
        key = f"{split_key(snapshot, 'dev')}/first{len(text)}"
        return Dev(pack(token_stream(tok, [text], key), context, tok.eos_id), len(text))
    docs = snapshot.documents("dev")
    chars = len(snapshot.separator.join(docs))
    if not chars:
        return None
    packed = pack(token_stream(tok, docs, split_key(snapshot, "dev")), context, tok.eos_id)
    cap = len(packed) if max_tokens is None else max(1, max_tokens // context)
    return Dev(Packed(packed.tokens[:cap], packed.mask[:cap]), chars if len(packed) <= cap else None)


def start_run(out: Path, cfg: ModelConfig, tok: Tokenizer, snapshot: Snapshot, settings: TrainSettings, steps: int,
              run_info: dict[str, Any] | None = None) -> None:
    """Create (or update) the run folder: its tokenizer, unless it has one, and `run.json` (with
    the keys of `run_info` added). A tokenizer loaded from a file does not know its type: the
    settings' is recorded then."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / MODEL_FILE).is_file():
        tok.save(out / MODEL_FILE)
    tok_info = tok.describe() | {"type": tok.model_type or settings.tokenizer}
    write_run(out, cfg, settings.to_dict(), tok_info, snapshot, steps, **(run_info or {}))


def train_into(out: Path, cfg: ModelConfig, tok: Tokenizer, snapshot: Snapshot, settings: TrainSettings,
               loop: LoopConfig, data: Batches, dev: Dev | None, *, loss: LossConfig = LossConfig(),
               teacher: Teacher | None = None, start_params: Any = None, keep: Any = None,
               deadline: float | None = None, run_info: dict[str, Any] | None = None) -> Summary:
    """`start_run`, then train (or finish training) the model there (`lm.trainer.train`)."""
    start_run(out, cfg, tok, snapshot, settings, loop.steps, run_info)
    return train(out, cfg, settings.optim, loop, data, dev, seed=settings.seed, loss=loss, teacher=teacher,
                 start_params=start_params, keep=keep, deadline=deadline)
