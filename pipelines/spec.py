"""Corpus specs (`corpora/NAME.toml`): load, validate, and describe them as dataclasses.

Every error names the file, the key and what is wrong, and exits with code 2 (SpecError).
Unknown keys are errors too, so a typo never silently falls back to a default. Each table's
defaults are defined once, on its dataclass (SplitSpec, FilterSpec, ...); the parser reads them there.
"""
from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from augment.registry import parse_augment
from common.snapshot_format import SPLITS
from pipelines.errors import SpecError
from pipelines.languages import CONFUSABLE, ISO_639_ALIASES
from pipelines.toml_table import TomlTable

FORMATS = ("lines", "paragraphs", "document", "jsonl", "conllu", "parquet")
SPLIT_METHODS = ("hash", "tail", "source")
LANGID_BACKENDS, LANGID_ACTIONS = ("py3langid",), ("reject", "flag", "off")
NEAR_DUP_ACTIONS = ("drop", "keep", "off")
SHINGLES = ("char", "word")
# Names that `datasets` uses for its splits, mapped onto ours.
HF_SPLIT_NAMES = {"train": "train", "validation": "dev", "valid": "dev", "dev": "dev", "test": "test"}
# Checked with fullmatch: `$` would let a trailing newline through ("nl\n" made a folder `nl\n`).
_LANG_RE = re.compile(r"[a-z]{2,3}")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# Bounds of the numeric keys: wide enough for any real corpus, narrow enough that a typo (an extra
# digit, a minus sign) is an error before any work rather than a huge allocation or an empty build.
_COUNT_MAX, _BYTES_MAX, _ROWS_MAX, _NGRAM_MAX = 1 << 31, 1 << 40, 100_000_000, 64
_NUM_PERM, _SEED_MAX = (16, 4096), (1 << 32) - 1  # numpy's RandomState takes 32-bit seeds


@dataclass(frozen=True)
class Source:
    """One input: exactly one of path, url or hf, plus how to read it."""

    name: str
    format: str
    path: str | None = None
    url: str | None = None
    hf: str | None = None
    sha256: str | None = None
    split: str | None = None  # the source's own split (train/dev/test)
    hf_split: str | None = None  # the `datasets` split to load
    config: str | None = None
    column: str | None = None
    field: str | None = None
    encoding: str = "utf-8"
    segment: bool = False
    max_bytes: int = 2 << 30

    @property
    def kind(self) -> str:
        return "path" if self.path else "url" if self.url else "hf"

    @property
    def location(self) -> str:
        return self.path or self.url or self.hf or ""


@dataclass(frozen=True)
class SplitSpec:
    method: str = "hash"
    dev: float = 0.1
    test: float = 0.1
    tail_dev: ClassVar[float] = 0.05  # `tail`'s dev default: a thinner slice before the test tail


@dataclass(frozen=True)
class LangIdSpec:
    """Language identification settings (`confusable` defaults per language from CONFUSABLE)."""

    backend: str = "py3langid"
    action: str = "reject"
    min_score: float = 0.5
    confusable: tuple[str, ...] = ()


@dataclass(frozen=True)
class FilterSpec:
    """Quality thresholds; a value of 0 (or false for `enabled`) switches a rule off."""

    enabled: bool = True
    max_record_bytes: int = 1 << 20  # longer units are rejected as `too_long` when read
    min_chars: int = 10
    max_chars: int = 10_000
    min_words: int = 3
    max_symbol_ratio: float = 0.25
    max_digit_ratio: float = 0.5
    min_alpha_ratio: float = 0.5
    # Gopher repetition rules (Rae et al. 2021), applied from `repetition_min_words` words up (they
    # were set for documents; on single sentences they would drop ordinary prose):
    # fraction of characters in the most frequent n-gram, and in duplicated n-grams.
    repetition_min_words: int = 50
    top_ngram_fraction: tuple[float, float, float] = (0.20, 0.18, 0.16)
    dup_ngram_fraction: tuple[float, ...] = (0.15, 0.14, 0.13, 0.12, 0.11, 0.10)
    top_ngram_sizes: ClassVar[tuple[int, ...]] = (2, 3, 4)  # the n of each top_ngram_fraction
    dup_ngram_sizes: ClassVar[tuple[int, ...]] = (5, 6, 7, 8, 9, 10)  # the n of each dup_ngram_fraction


@dataclass(frozen=True)
class DedupSpec:
    """Exact and MinHash near-duplicate settings (dedup.py, lsh.py)."""

    exact: bool = True
    near: str = "drop"
    threshold: float = 0.7
    num_perm: int = 112
    bands: int = 14
    ngram: int = 5
    shingle: str = "char"
    seed: int = 1


@dataclass(frozen=True)
class OutputSpec:
    """Shard size; augmented sets use the default too."""

    rows_per_shard: int = 200_000


@dataclass(frozen=True)
class CorpusSpec:
    name: str
    language: str
    sources: tuple[Source, ...]
    path: str
    sha256: str
    text: str
    license: str | None = None
    description: str | None = None
    split: SplitSpec = field(default_factory=SplitSpec)
    langid: LangIdSpec = field(default_factory=LangIdSpec)
    filters: FilterSpec = field(default_factory=FilterSpec)
    dedup: DedupSpec = field(default_factory=DedupSpec)
    output: OutputSpec = field(default_factory=OutputSpec)
    augment: dict[str, Any] = field(default_factory=dict)

    @property
    def base_dir(self) -> Path:
        return Path(self.path).resolve().parent


def _location(t: TomlTable) -> tuple[str, str]:
    """(path, url or hf: the one given; its value), and a URL is one we fetch."""
    where = [k for k in ("path", "url", "hf") if k in t.data]
    if len(where) != 1:
        raise SpecError(f"{t.file}: {t.where}: needs exactly one of path, url, hf (got {', '.join(where) or 'none'})")
    kind = where[0]
    location = t.get(kind, str, required=True)
    if not location:
        raise t.fail(kind, "must not be empty")
    if kind == "url" and not url_allowed(location):
        raise t.fail("url", f"must be an https:// address (got {location!r})")
    if kind == "url" and any(c.isspace() or not c.isprintable() for c in location):
        raise t.fail("url", f"must not contain spaces or control characters (got {location!r})")
    return kind, location


def _sha256(t: TomlTable, kind: str) -> str | None:
    sha = t.get("sha256", str)
    if sha is not None and not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise t.fail("sha256", "must be 64 lowercase hex digits")
    if sha is not None and kind == "hf":
        raise t.fail("sha256", "is only for path and url sources")
    return sha


def _source_split(t: TomlTable, kind: str) -> tuple[str | None, str | None]:
    """(our split, the `datasets` split to load): an hf source's `split` is the dataset's own."""
    split = t.get("split", str)
    if kind == "hf":
        hf_split, split = split, HF_SPLIT_NAMES.get(split or "", None)
        if t.get("assign", str) is not None:
            split = t.choice("assign", SPLITS)
        return split, hf_split
    if split is not None and split not in SPLITS:
        raise t.fail("split", f"must be one of {', '.join(SPLITS)} (got {split!r})")
    return split, None


def _reader_keys(t: TomlTable, kind: str, fmt: str) -> dict[str, Any]:
    """The keys that say where the text is inside a file: each only for the formats that have it."""
    fld = t.get("field", str, "text" if fmt == "jsonl" else None)
    if fld is not None and fmt != "jsonl":
        raise t.fail("field", "is only for jsonl sources")
    column = t.get("column", str, "text" if fmt == "parquet" or kind == "hf" else None)
    if column is not None and fmt != "parquet" and kind != "hf":
        raise t.fail("column", "is only for parquet and hf sources")
    config = t.get("config", str)
    if config is not None and kind != "hf":
        raise t.fail("config", "is only for hf sources")
    encoding = t.get("encoding", str, Source.encoding)
    try:
        "".encode(encoding)
    except LookupError:
        raise t.fail("encoding", f"unknown encoding {encoding!r}") from None
    return {"field": fld, "column": column, "config": config, "encoding": encoding}


def _source_name(t: TomlTable, index: int, location: str, names: set[str]) -> str:
    """The source's name, by default its file's stem; unique within the spec (`names` so far)."""
    default_name = Path(location.rstrip("/").split("?")[0]).stem or f"source{index}"
    name = t.get("name", str, default_name)
    if not _NAME_RE.fullmatch(name):
        raise t.fail("name", f"must be letters, digits, '.', '_' or '-' (got {name!r})")
    if name in names:
        raise t.fail("name", f"duplicate source name {name!r}; give each source a distinct `name`")
    names.add(name)
    return name


def _source(file: str, index: int, data: Any, names: set[str]) -> Source:
    t = TomlTable(file, f"sources[{index}]", data)
    kind, location = _location(t)
    sha = _sha256(t, kind)
    fmt = t.choice("format", FORMATS, default="parquet" if kind == "hf" else None, required=kind != "hf")
    split, hf_split = _source_split(t, kind)
    reader = _reader_keys(t, kind, fmt)
    name = _source_name(t, index, location, names)
    segment = t.get("segment", bool, fmt in ("paragraphs", "document"))
    max_bytes = t.ranged("max_bytes", int, Source.max_bytes, 1, _BYTES_MAX)
    t.done()
    return Source(name=name, format=fmt, split=split, hf_split=hf_split, segment=segment, max_bytes=max_bytes,
                  sha256=sha, **reader, **{kind: location})


def is_loopback_http(url: str) -> bool:
    """Plain http is only for a server on this machine (tests, a local mirror daemon)."""
    return bool(re.match(r"http://(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?/", url))


def url_allowed(url: str) -> bool:
    """The rule for a URL source: https, or plain http to this machine."""
    return url.startswith("https://") or is_loopback_http(url)


def _sources(top: TomlTable) -> tuple[Source, ...]:
    raw_sources = top.get("sources", list, required=True)
    if not raw_sources:
        raise top.fail("sources", "must name at least one source")
    names: set[str] = set()
    return tuple(_source(top.file, i, s, names) for i, s in enumerate(raw_sources))


def _split(t: TomlTable, sources: tuple[Source, ...]) -> SplitSpec:
    method = t.choice("method", SPLIT_METHODS, SplitSpec.method)
    dev_default = SplitSpec.tail_dev if method == "tail" else SplitSpec.dev
    split = SplitSpec(method=method, dev=t.fraction("dev", dev_default), test=t.fraction("test", SplitSpec.test))
    if split.dev + split.test >= 1.0:
        raise t.fail("test", f"dev + test must be below 1 (got {split.dev + split.test})")
    if method == "source":
        for i, s in enumerate(sources):
            if s.split is None:
                raise SpecError(f"{t.file}: sources[{i}].split: is required when split.method = 'source'")
    t.done()
    return split


def _langid(t: TomlTable, language: str) -> LangIdSpec:
    confusable = t.get("confusable", list, CONFUSABLE.get(ISO_639_ALIASES.get(language, language), []))
    if not all(isinstance(c, str) and _LANG_RE.fullmatch(c) for c in confusable):
        raise t.fail("confusable", "must be a list of ISO 639 codes")
    langid = LangIdSpec(
        backend=t.choice("backend", LANGID_BACKENDS, LangIdSpec.backend),
        action=t.choice("action", LANGID_ACTIONS, LangIdSpec.action),
        min_score=t.fraction("min_score", LangIdSpec.min_score),
        confusable=tuple(confusable),
    )
    t.done()
    return langid


def _filters(t: TomlTable) -> FilterSpec:
    d = FilterSpec
    top_ngram = tuple(t.get("top_ngram_fraction", list, list(d.top_ngram_fraction)))
    dup_ngram = tuple(t.get("dup_ngram_fraction", list, list(d.dup_ngram_fraction)))
    top_n, dup_n = d.top_ngram_sizes, d.dup_ngram_sizes
    if (len(top_ngram) != len(top_n) or len(dup_ngram) != len(dup_n)
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in top_ngram + dup_ngram)):
        raise t.fail("top_ngram_fraction", f"top_ngram_fraction needs {len(top_n)} numbers (n = {top_n[0]}..{top_n[-1]}), "
                                           f"dup_ngram_fraction {len(dup_n)} (n = {dup_n[0]}..{dup_n[-1]})")
    for key, values in (("top_ngram_fraction", top_ngram), ("dup_ngram_fraction", dup_ngram)):
        if not all(0.0 <= x <= 1.0 for x in values):  # also false for NaN
            raise t.fail(key, f"every value must be in [0, 1] (got {list(values)})")
    filters = FilterSpec(
        enabled=t.get("enabled", bool, d.enabled),
        max_record_bytes=t.ranged("max_record_bytes", int, d.max_record_bytes, 0, _COUNT_MAX) or d.max_record_bytes,
        min_chars=t.ranged("min_chars", int, d.min_chars, 0, _COUNT_MAX),
        max_chars=t.ranged("max_chars", int, d.max_chars, 0, _COUNT_MAX),
        min_words=t.ranged("min_words", int, d.min_words, 0, _COUNT_MAX),
        max_symbol_ratio=t.ranged("max_symbol_ratio", float, d.max_symbol_ratio, 0.0, 1.0),
        max_digit_ratio=t.ranged("max_digit_ratio", float, d.max_digit_ratio, 0.0, 1.0),
        min_alpha_ratio=t.ranged("min_alpha_ratio", float, d.min_alpha_ratio, 0.0, 1.0),
        repetition_min_words=t.ranged("repetition_min_words", int, d.repetition_min_words, 0, _COUNT_MAX),
        top_ngram_fraction=tuple(float(x) for x in top_ngram),
        dup_ngram_fraction=tuple(float(x) for x in dup_ngram),
    )
    if filters.max_chars and filters.min_chars > filters.max_chars:
        raise t.fail("max_chars", f"must be at least min_chars ({filters.min_chars}) or 0 (got {filters.max_chars})")
    t.done()
    return filters


def _dedup(t: TomlTable) -> DedupSpec:
    d = DedupSpec
    dedup = DedupSpec(
        exact=t.get("exact", bool, d.exact),
        near=t.choice("near", NEAR_DUP_ACTIONS, d.near),
        threshold=t.fraction("threshold", d.threshold),
        num_perm=t.ranged("num_perm", int, d.num_perm, *_NUM_PERM),
        bands=t.ranged("bands", int, d.bands, 1, _NUM_PERM[1]),
        ngram=t.ranged("ngram", int, d.ngram, 1, _NGRAM_MAX),
        shingle=t.choice("shingle", SHINGLES, d.shingle),
        seed=t.ranged("seed", int, d.seed, 0, _SEED_MAX),
    )
    if dedup.num_perm % dedup.bands:
        raise t.fail("bands", f"must divide num_perm ({dedup.num_perm}) evenly")
    t.done()
    return dedup


def _output(t: TomlTable) -> OutputSpec:
    default = OutputSpec.rows_per_shard
    output = OutputSpec(rows_per_shard=t.ranged("rows_per_shard", int, default, 0, _ROWS_MAX) or default)  # 0: the default
    t.done()
    return output


def _augment(top: TomlTable, language: str) -> dict[str, Any]:
    """The `[augment]` table, checked in full here so a bad step stops the spec, before any work."""
    table = top.get("augment", dict, {})
    try:
        if table:
            parse_augment(table, language)
    except ValueError as exc:
        raise SpecError(f"{top.file}: {exc}") from None
    return table


def parse_spec(text: str, file: str) -> CorpusSpec:
    """Validate the TOML text of a spec; `file` is used in messages and to resolve relative paths."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{file}: not valid TOML: {exc}") from None
    top = TomlTable(file, "", data)
    name = top.get("name", str, required=True)
    if not _NAME_RE.fullmatch(name):
        raise top.fail("name", f"must be letters, digits, '.', '_' or '-' (got {name!r})")
    language = top.get("language", str, required=True)
    if not _LANG_RE.fullmatch(language):
        raise top.fail("language", f"must be an ISO 639 code such as 'gl' or 'fao' (got {language!r})")
    sources = _sources(top)
    # Keyword order is checking order: with several mistakes, the first one named stays the same.
    spec = CorpusSpec(
        name=name, language=language, sources=sources, path=file,
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(), text=text,
        split=_split(top.table("split"), sources), langid=_langid(top.table("langid"), language),
        filters=_filters(top.table("filters")), dedup=_dedup(top.table("dedup")), output=_output(top.table("output")),
        augment=_augment(top, language), license=top.get("license", str), description=top.get("description", str),
    )
    top.done()
    return spec


def load_spec(path: str | Path) -> CorpusSpec:
    """Read and validate a spec file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: spec file not found") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a folder, not a spec file (give one, e.g. corpora/gl-ctg.toml)") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the spec ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: spec is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    return parse_spec(text, str(path))


def resolve_path(spec: CorpusSpec, source: Source) -> Path:
    """A path source, relative to the spec file unless absolute."""
    p = Path(source.path).expanduser()
    return p if p.is_absolute() else spec.base_dir / p
