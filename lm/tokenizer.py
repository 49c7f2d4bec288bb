"""SentencePiece tokenizer: trained on training text only, saved beside the run.

Unigram by default (BPE optional), byte fallback on (any text round-trips, even characters
never seen in training), identity normalisation and no dummy prefix or whitespace folding (the
decoded text is the input, byte for byte), and "\\n" as a piece of its own (records are
joined with newlines; text is encoded line by line, so a line's tokens do not depend on where it
falls: `Tokenizer.encode`). Training is deterministic: one thread, every sentence, no shuffling,
so the same text gives a byte-identical model; its sha256 keys the token cache.

A vocabulary size the text cannot support is a DataError stating the valid range
(`vocab_range`): at least the text's characters + 256 byte pieces + specials, at most what
training can find in it. SentencePiece reports one bound in its error; the other comes from
one more call that fails fast (the minimum is checked before training) or, for texts up to
MAX_PROBE_CHARS, from one more training run (the maximum is known only after it).
"""
from __future__ import annotations

import hashlib
import io
import math
import re
from functools import cached_property
from pathlib import Path
from typing import Iterable, Iterator

import sentencepiece as spm

from common.files import replacing
from lm.errors import CheckpointError, DataError, UsageError

MODEL_FILE = "tokenizer.model"
MODEL_TYPES = ("unigram", "bpe")
MAX_LINE_CHARS = 4096          # SentencePiece's own sentence limit is in bytes; stay well inside it
MAX_TRAIN_CHARS = 50_000_000   # cap for huge corpora: the first lines, in reading order
MIN_VOCAB, MAX_VOCAB = 512, 32768
UNK, EOS = 0, 1                # ids fixed by the trainer options below; no BOS or PAD pieces
USER_DEFINED = ("\n",)        # pieces always kept whole
PROBE_SMALL, PROBE_LARGE = 4, 1 << 22   # below / above any text's bounds, to make SentencePiece name them
MAX_PROBE_CHARS = 2_000_000    # finding the maximum costs a training run: ~1 s per 300k characters
_TOO_SMALL = re.compile(r"smaller than required_chars\. (\d+) vs (\d+)")
_TOO_LARGE = re.compile(r"too high \((\d+)\)\. Please set it to a value <= (\d+)")


class Tokenizer:
    """A trained SentencePiece model held as bytes (what is saved and hashed)."""

    def __init__(self, model: bytes, model_type: str | None = None):
        self.model = model
        self.model_type = model_type  # known when trained here; run.json keeps it
        self.sp = spm.SentencePieceProcessor(model_proto=model)

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        p = Path(path)
        try:
            return cls(p.read_bytes())
        except OSError as exc:
            raise CheckpointError(f"tokenizer {p} cannot be read: {exc.strerror or exc}") from exc
        except RuntimeError as exc:
            raise CheckpointError(f"tokenizer {p} is not a SentencePiece model: {exc}") from exc

    def save(self, path: str | Path) -> None:
        with replacing(path) as tmp:  # whole or absent: a re-run loads whatever file it finds
            tmp.write_bytes(self.model)

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.model).hexdigest()

    @property
    def vocab_size(self) -> int:
        return self.sp.vocab_size()

    @property
    def eos_id(self) -> int:
        return self.sp.eos_id()

    @cached_property
    def _newline(self) -> int | None:
        """The id of the "\\n" piece (every tokenizer trained here has one), else None."""
        i = self.sp.piece_to_id("\n")
        return i if self.sp.id_to_piece(i) == "\n" else None

    def encode(self, text: str) -> list[int]:
        """Line by line, joined by the "\\n" piece: no other piece holds a newline, so this is
        the segmentation of the whole text, and a line is segmented the same wherever it falls.
        (SentencePiece keeps its Viterbi path scores in float32: in one call on a long text,
        such as a whole split, near-tied segmentations far into it were settled by rounding,
        unlike the same line alone or `tokenizers`, which reads the hf export, in doubles.)"""
        if self._newline is None or "\n" not in text:
            return self.sp.encode(text)
        out: list[int] = []
        for i, ids in enumerate(self.sp.encode(text.split("\n"))):
            if i:
                out.append(self._newline)
            out += ids
        return out

    def decode(self, ids: Iterable[int]) -> str:
        return self.sp.decode([int(i) for i in ids if int(i) != self.eos_id])

    def describe(self) -> dict:
        return {"file": MODEL_FILE, "type": self.model_type, "vocab_size": self.vocab_size,
                "sha256": self.sha256}


def default_vocab_size(n_chars: int) -> int:
    """About sqrt(characters), as a power of two in [512, 32768]: 512 for gl-ctg's 0.4M
    characters, 1024 for Tiny Shakespeare's 0.9M, 4096 for 10M. Small corpora want small
    vocabularies (every piece needs examples), and 256 ids go to byte fallback."""
    if n_chars <= 0:
        return MIN_VOCAB
    v = 2 ** round(math.log2(math.sqrt(n_chars)))
    return int(min(MAX_VOCAB, max(MIN_VOCAB, v)))


def training_lines(texts: Iterable[str]) -> Iterator[str]:
    """Lines of the texts (newline is its own piece), long lines cut, capped at MAX_TRAIN_CHARS."""
    total = 0
    for text in texts:
        for line in text.split("\n"):
            for i in range(0, len(line), MAX_LINE_CHARS):
                chunk = line[i:i + MAX_LINE_CHARS]
                if chunk.strip():
                    yield chunk
                    total += len(chunk)
                    if total >= MAX_TRAIN_CHARS:
                        return


def train_tokenizer(texts: list[str], vocab_size: int | None = None, model_type: str = "unigram") -> Tokenizer:
    """Train on `texts` (training text only: the caller never passes dev or test)."""
    if model_type not in MODEL_TYPES:
        raise UsageError(f"--tokenizer must be one of {', '.join(MODEL_TYPES)}, not {model_type!r}")
    lines = list(training_lines(texts))
    n_chars = sum(len(x) for x in lines)
    if not lines:
        raise DataError("no training text for the tokenizer: the train split is empty")
    size = vocab_size or default_vocab_size(n_chars)
    try:
        model = _train(lines, size, model_type)
    except RuntimeError as exc:
        what = f"cannot train a {size}-piece {model_type} tokenizer on {n_chars} characters of training text"
        raise DataError(f"{what}: {_size_advice(lines, size, vocab_size is None, model_type, exc)}") from exc
    return Tokenizer(model, model_type)


def _train(lines: list[str], size: int, model_type: str) -> bytes:
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buf, vocab_size=size, model_type=model_type,
        byte_fallback=True, character_coverage=0.9999, normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=False, allow_whitespace_only_pieces=True,
        split_digits=True, user_defined_symbols=list(USER_DEFINED),
        unk_id=UNK, eos_id=EOS, bos_id=-1, pad_id=-1,
        # determinism: one thread, all sentences, in order
        num_threads=1, input_sentence_size=0, shuffle_input_sentence=False,
        max_sentence_length=4 * MAX_LINE_CHARS + 16, minloglevel=2,
    )
    return buf.getvalue()


def _bound(lines: list[str], size: int, model_type: str, pattern: re.Pattern[str]) -> int | None:
    """The bound SentencePiece names when asked for `size` pieces (None if it names none)."""
    try:
        _train(lines, size, model_type)
    except RuntimeError as exc:
        m = pattern.search(str(exc))
        return int(m[2]) if m else None
    return None


def vocab_range(lines: list[str], model_type: str, error: str = "") -> tuple[int | None, int | None]:
    """(fewest, most) pieces a tokenizer of `lines` can have; `error`: SentencePiece's message for a
    size out of range, which names one bound. The maximum is left None for texts past MAX_PROBE_CHARS."""
    low = _TOO_SMALL.search(error)
    high = _TOO_LARGE.search(error)
    lo = int(low[2]) if low else _bound(lines, PROBE_SMALL, model_type, _TOO_SMALL)
    hi = int(high[2]) if high else None
    if hi is None and sum(len(x) for x in lines) <= MAX_PROBE_CHARS:
        hi = _bound(lines, PROBE_LARGE, model_type, _TOO_LARGE)
    return lo, hi


def _size_advice(lines: list[str], size: int, default: bool, model_type: str, exc: RuntimeError) -> str:
    """Why `size` failed, with the valid range when SentencePiece's error is about the size."""
    error = str(exc).strip()
    name = f"the default vocabulary size {size} (from the text's length)" if default else f"--vocab-size {size}"
    if not (_TOO_SMALL.search(error) or _TOO_LARGE.search(error)):
        reason = error.splitlines()[-1] if error else type(exc).__name__
        return f"{reason}; give a smaller --vocab-size or more text"
    lo, hi = vocab_range(lines, model_type, error)
    if lo is not None and hi is not None and lo > hi:
        return f"no vocabulary size works: the text needs {lo} pieces but allows only {hi}; give more text"
    span = (f"between {lo} and {hi}" if lo is not None and hi is not None
            else f"at least {lo}" if lo is not None else f"at most {hi}")
    if _TOO_SMALL.search(error):
        return (f"{name} is below the {lo} pieces this text needs (its characters + 256 byte-fallback pieces "
                f"+ specials); give a larger --vocab-size, {span}")
    return f"{name} is above the {hi} pieces this text allows; give a smaller --vocab-size, {span}, or more text"
