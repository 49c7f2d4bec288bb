"""Build augmenters from a spec's `[augment]` table.

```toml
[augment]
seed = 13                      # global seed (the command line's --seed wins)
batch_size = 500               # records per backend call
[augment.filters]              # VariantFilter thresholds (augment/filters.py)
max_edit_ratio = 0.9
[[augment.steps]]
augmenter = "backtranslate"    # backtranslate | synonyms | noise
backend = "apertium"
pivot = ["es", "pt"]
[augment.teacher_sample]       # read by the distillation loop, not by pipelines.augment:
samples = 400                  # real train prefixes its real-text teacher continues (0: none)
max_tokens = 48
temperature = 0.8
top_p = 0.95
```
Every other key of a step is a parameter of its augmenter. A bad key or value is a ValueError
whose message starts with the key path (`augment.steps[1].rate: ...`).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from augment.backtranslate import BackTranslateAugmenter
from augment.base import Augmenter
from augment.filters import VariantFilter
from augment.noise import NoiseAugmenter
from augment.synonyms import SynonymAugmenter

AUGMENTERS: dict[str, type[Augmenter]] = {
    "backtranslate": BackTranslateAugmenter,
    "synonyms": SynonymAugmenter,
    "noise": NoiseAugmenter,
}
TABLE_KEYS = {"seed", "batch_size", "filters", "steps", "teacher_sample"}
TEACHER_SAMPLE_KEYS = {"samples": int, "max_tokens": int, "temperature": float, "top_p": float}


def parse_teacher_sample(table: Any) -> dict[str, Any]:
    """`[augment.teacher_sample]` checked: the keys given, as numbers in range."""
    where = "augment.teacher_sample"
    if not isinstance(table, dict):
        raise ValueError(f"{where}: must be a table")
    out: dict[str, Any] = {}
    for key, value in table.items():
        kind = TEACHER_SAMPLE_KEYS.get(key)
        if kind is None:
            raise ValueError(f"{where}.{key}: unknown key (known: {', '.join(sorted(TEACHER_SAMPLE_KEYS))})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
            raise ValueError(f"{where}.{key}: must be a{'n integer' if kind is int else ' number'} (got {value!r})")
        out[key] = kind(value)
    for key, ok, want in (("samples", lambda v: v >= 0, ">= 0"), ("max_tokens", lambda v: v >= 1, ">= 1"),
                          ("temperature", lambda v: v > 0, "> 0"), ("top_p", lambda v: 0 < v <= 1, "in (0, 1]")):
        if key in out and not ok(out[key]):
            raise ValueError(f"{where}.{key}: must be {want} (got {out[key]})")
    return out


@dataclass(frozen=True)
class Step:
    """One configured augmenter: `name` labels its variants (provenance and stats)."""

    index: int
    name: str
    kind: str
    params: dict[str, Any]

    def build(self, language: str) -> Augmenter:
        return AUGMENTERS[self.kind](language=language, **self.params)

    @property
    def context_free(self) -> bool:
        """Whether this step's output for a record ignores its batch-mates (known without building it)."""
        return AUGMENTERS[self.kind].is_context_free(self.params)


@dataclass(frozen=True)
class AugmentConfig:
    seed: int
    batch_size: int
    filters: VariantFilter
    steps: tuple[Step, ...]


def parse_augment(table: dict[str, Any], language: str) -> AugmentConfig:
    """Validate the table (building every augmenter once, without loading its resources)."""
    unknown = sorted(set(table) - TABLE_KEYS)
    if unknown:
        raise ValueError(f"augment.{unknown[0]}: unknown key")
    seed = table.get("seed", 0)
    batch_size = table.get("batch_size", 500)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"augment.seed: must be an integer (got {seed!r})")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"augment.batch_size: must be a positive integer (got {batch_size!r})")
    parse_teacher_sample(table.get("teacher_sample", {}))
    try:
        filters = VariantFilter.from_table(table.get("filters", {}))
    except TypeError as exc:
        raise ValueError(f"augment.filters: {exc}") from None
    raw_steps = table.get("steps", [])
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ValueError("augment.steps: must list at least one step ([[augment.steps]])")
    names: set[str] = set()
    steps = tuple(_step(i, raw, names, language) for i, raw in enumerate(raw_steps))
    return AugmentConfig(seed=seed, batch_size=batch_size, filters=filters, steps=steps)


def _step(index: int, raw: Any, names: set[str], language: str) -> Step:
    """One `[[augment.steps]]` table; its name made unique among `names` (the steps before it)."""
    where = f"augment.steps[{index}]"
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: must be a table")
    params = dict(raw)
    kind = params.pop("augmenter", None)
    if kind not in AUGMENTERS:
        raise ValueError(f"{where}.augmenter: must be one of {', '.join(AUGMENTERS)} (got {kind!r})")
    name = params.pop("name", kind)
    if name in names:
        name = f"{name}-{index}"
    names.add(name)
    _check_parameters(where, kind, params)
    step = Step(index, name, kind, params)
    try:
        step.build(language)
    except (TypeError, ValueError) as exc:
        # "rate: must be ..." from a check on one parameter reads as that parameter's key path.
        joined = "." if str(exc).split(":")[0].split(".")[0] in params else ": "
        raise ValueError(f"{where}{joined}{exc}") from None
    return step


def _check_parameters(where: str, kind: str, params: dict[str, Any]) -> None:
    """Every key must be a parameter of the augmenter's constructor, or one of the `**options` its
    backend takes (back-translation's: none for Apertium), so a typo is never silently ignored."""
    cls = AUGMENTERS[kind]
    signature = inspect.signature(cls.__init__).parameters
    accepted = {name for name, p in signature.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}
    accepted = (accepted - {"self", "language", "thesaurus", "stopwords"}) | cls.extra_parameters(params)
    bad = sorted(set(params) - accepted)
    if bad:
        raise ValueError(f"{where}.{bad[0]}: unknown parameter of {kind} (known: {', '.join(sorted(accepted))})")
