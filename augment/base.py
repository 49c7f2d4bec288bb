"""The augmenter interface and per-record random streams.

An augmenter maps a batch of texts to a list of variants per text. Its output is a pure
function of (input, parameters, seed): the pipeline gives every record its own seed, derived
from (record id, augmenter, step, global seed), so results never depend on batching, ordering
or the number of workers.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
from abc import ABC, abstractmethod
from typing import Any, Iterable, Mapping, Sequence


class AugmenterError(Exception):
    """A backend that cannot run (missing Apertium pair, missing thesaurus): one-line message."""


MAX_VARIANTS = 100  # per record and step; more is a typo, not an augmentation plan


def record_seed(record_id: str, augmenter: str, step: int, seed: int) -> int:
    """A 63-bit seed for one record's random stream."""
    digest = hashlib.sha256(f"{record_id}\0{augmenter}\0{step}\0{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def rngs(seeds: int | Sequence[int], n: int) -> list[random.Random]:
    """One Random per text: from per-record seeds, or derived from one seed and the position."""
    if isinstance(seeds, int):
        seeds = [record_seed(str(i), "batch", 0, seeds) for i in range(n)]
    if len(seeds) != n:
        raise ValueError(f"{len(seeds)} seeds for {n} texts")
    return [random.Random(s) for s in seeds]


def check_number(name: str, value: Any, low: float, high: float, integer: bool = False) -> None:
    """A ValueError naming `name` unless `value` is a finite number (an int where `integer`) in [low, high]."""
    kinds = int if integer else (int, float)
    if (isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value)
            or not low <= value <= high):
        raise ValueError(f"{name}: must be {'a whole number' if integer else 'a number'} in [{low}, {high}] (got {value!r})")


class Augmenter(ABC):
    """A named augmenter. `setup()` loads heavy resources once; `augment_batch` is pure."""

    name: str = "augmenter"
    # False when a record's output depends on its batch-mates (a backend with state across
    # lines); the pipeline then forms batches from record ids only.
    context_free: bool = True

    def __init__(self, variants: int = 1, **params: Any):
        check_number("variants", variants, 1, MAX_VARIANTS, integer=True)
        self.variants = variants
        self.params = {"variants": variants, **params}

    @classmethod
    def extra_parameters(cls, params: Mapping[str, Any]) -> frozenset[str]:
        """Keys taken through `**options` for a step's `params` (beyond the constructor's named ones)."""
        return frozenset()

    @classmethod
    def is_context_free(cls, params: Mapping[str, Any]) -> bool:
        """`context_free` of an augmenter built from a step's `params`, asked before building one."""
        return cls.context_free

    def setup(self) -> None:
        """Load dictionaries, start nothing per sentence; called once per worker."""

    def set_stopwords(self, words: Iterable[str]) -> None:
        """The corpus's most frequent words, for augmenters that need a stop-word list (else ignored)."""

    def variant_params(self, k: int) -> dict[str, Any]:
        """The parameters that made the `k`-th variant of a text (its provenance)."""
        return self.params

    @abstractmethod
    def augment_batch(self, texts: Sequence[str], seeds: int | Sequence[int]) -> list[list[str]]:
        """Variants for every text (possibly fewer than `variants`, never None)."""

    def params_json(self) -> str:
        return json.dumps(self.params, sort_keys=True, ensure_ascii=False)
