"""Corpus specs (`corpora/NAME.toml`): load, validate, and describe them as dataclasses.

Every error names the file, the key and what is wrong, and exits with code 2 (SpecError).
Unknown keys are errors too, so a typo never silently falls back to a default.
"""
from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.errors import SpecError

FORMATS = ("lines", "paragraphs", "document", "jsonl", "conllu", "parquet")
SPLITS = ("train", "dev", "test")
SPLIT_METHODS = ("hash", "tail", "source")
LANGID_ACTIONS = ("reject", "flag", "off")
NEAR_DUP_ACTIONS = ("drop", "keep", "off")
# Names that `datasets` uses for its splits, mapped onto ours.
HF_SPLIT_NAMES = {"train": "train", "validation": "dev", "valid": "dev", "dev": "dev", "test": "test"}
# Languages that a character n-gram identifier confuses with the corpus language; a record
# predicted as one of these still counts as the corpus language (Galician is not Portuguese).
CONFUSABLE = {
    "gl": ["pt", "es"], "pt": ["gl"], "es": ["gl", "ca", "an", "ast"], "ca": ["oc", "es"],
    "oc": ["ca"], "ast": ["es"], "fo": ["is", "nn", "no", "da"], "is": ["fo"],
    "nn": ["no", "nb", "da", "sv"], "nb": ["no", "nn", "da", "sv"], "no": ["nb", "nn", "da", "sv"],
    "da": ["no", "nb", "nn"], "bs": ["hr", "sr"], "hr": ["bs", "sr"], "sr": ["bs", "hr"],
    "ms": ["id"], "id": ["ms"], "lb": ["de"], "af": ["nl"], "mt": ["it"], "eu": [],
}
# Checked with fullmatch: `$` would let a trailing newline through ("nl\n" made a folder `nl\n`).
_LANG_RE = re.compile(r"[a-z]{2,3}")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


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


@dataclass(frozen=True)
class LangIdSpec:
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
    top_ngram_fraction: tuple[float, float, float] = (0.20, 0.18, 0.16)  # n = 2, 3, 4
    dup_ngram_fraction: tuple[float, ...] = (0.15, 0.14, 0.13, 0.12, 0.11, 0.10)  # n = 5..10


@dataclass(frozen=True)
class DedupSpec:
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


class _Table:
    """Reads one TOML table, checking types and remembering which keys were used."""

    def __init__(self, file: str, where: str, data: Any):
        if not isinstance(data, dict):
            raise SpecError(f"{file}: {where or 'top level'}: must be a table")
        self.file, self.where, self.data, self.used = file, where, data, set()

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def fail(self, name: str, problem: str) -> SpecError:
        return SpecError(f"{self.file}: {self.key(name)}: {problem}")

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = None, required: bool = False) -> Any:
        self.used.add(name)
        if name not in self.data:
            if required:
                raise self.fail(name, "is required")
            return default
        value = self.data[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # TOML integers are fine where floats are asked for; booleans are not numbers here.
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise self.fail(name, f"must be {names} (got {value!r})")
        return value

    def choice(self, name: str, options: tuple[str, ...], default: str | None = None, required: bool = False) -> str | None:
        value = self.get(name, str, default, required)
        if value is not None and value not in options:
            raise self.fail(name, f"must be one of {', '.join(options)} (got {value!r})")
        return value

    def fraction(self, name: str, default: float) -> float:
        value = self.get(name, float, default)
        if not 0.0 <= value < 1.0:
            raise self.fail(name, f"must be a fraction in [0, 1) (got {value})")
        return value

    def positive(self, name: str, default: int) -> int:
        value = self.get(name, int, default)
        if value < 0:
            raise self.fail(name, f"must not be negative (got {value})")
        return value

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.fail(unknown[0], "unknown key")


def _source(file: str, index: int, data: Any, names: set[str]) -> Source:
    t = _Table(file, f"sources[{index}]", data)
    where = [k for k in ("path", "url", "hf") if k in t.data]
    if len(where) != 1:
        raise SpecError(f"{file}: sources[{index}]: needs exactly one of path, url, hf (got {', '.join(where) or 'none'})")
    kind = where[0]
    location = t.get(kind, str, required=True)
    if not location:
        raise t.fail(kind, "must not be empty")
    if kind == "url" and not url_allowed(location):
        raise t.fail("url", f"must be an https:// address (got {location!r})")
    if kind == "url" and any(c.isspace() or not c.isprintable() for c in location):
        raise t.fail("url", f"must not contain spaces or control characters (got {location!r})")
    sha = t.get("sha256", str)
    if sha is not None and not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise t.fail("sha256", "must be 64 lowercase hex digits")
    if sha is not None and kind == "hf":
        raise t.fail("sha256", "is only for path and url sources")
    fmt = t.choice("format", FORMATS, default="parquet" if kind == "hf" else None, required=kind != "hf")
    split = t.get("split", str)
    hf_split = None
    if kind == "hf":
        hf_split, split = split, HF_SPLIT_NAMES.get(split or "", None)
        if t.get("assign", str) is not None:
            split = t.choice("assign", SPLITS)
    elif split is not None and split not in SPLITS:
        raise t.fail("split", f"must be one of {', '.join(SPLITS)} (got {split!r})")
    fld = t.get("field", str, "text" if fmt == "jsonl" else None)
    if fld is not None and fmt != "jsonl":
        raise t.fail("field", "is only for jsonl sources")
    column = t.get("column", str, "text" if fmt == "parquet" or kind == "hf" else None)
    if column is not None and fmt != "parquet" and kind != "hf":
        raise t.fail("column", "is only for parquet and hf sources")
    config = t.get("config", str)
    if config is not None and kind != "hf":
        raise t.fail("config", "is only for hf sources")
    encoding = t.get("encoding", str, "utf-8")
    try:
        "".encode(encoding)
    except LookupError:
        raise t.fail("encoding", f"unknown encoding {encoding!r}") from None
    default_name = Path(location.rstrip("/").split("?")[0]).stem or f"source{index}"
    name = t.get("name", str, default_name)
    if not _NAME_RE.fullmatch(name):
        raise t.fail("name", f"must be letters, digits, '.', '_' or '-' (got {name!r})")
    if name in names:
        raise t.fail("name", f"duplicate source name {name!r}; give each source a distinct `name`")
    names.add(name)
    segment = t.get("segment", bool, fmt in ("paragraphs", "document"))
    max_bytes = t.positive("max_bytes", 2 << 30)
    t.done()
    return Source(
        name=name, format=fmt, split=split, hf_split=hf_split, config=config, column=column,
        field=fld, encoding=encoding, segment=segment, max_bytes=max_bytes, sha256=sha, **{kind: location},
    )


def is_loopback_http(url: str) -> bool:
    """Plain http is only for a server on this machine (tests, a local mirror daemon)."""
    return bool(re.match(r"http://(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?/", url))


def url_allowed(url: str) -> bool:
    """The rule for a URL source: https, or plain http to this machine."""
    return url.startswith("https://") or is_loopback_http(url)


def parse_spec(text: str, file: str) -> CorpusSpec:
    """Validate the TOML text of a spec; `file` is used in messages and to resolve relative paths."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{file}: not valid TOML: {exc}") from None
    top = _Table(file, "", data)
    name = top.get("name", str, required=True)
    if not _NAME_RE.fullmatch(name):
        raise top.fail("name", f"must be letters, digits, '.', '_' or '-' (got {name!r})")
    language = top.get("language", str, required=True)
    if not _LANG_RE.fullmatch(language):
        raise top.fail("language", f"must be an ISO 639 code such as 'gl' or 'fao' (got {language!r})")
    raw_sources = top.get("sources", list, required=True)
    if not raw_sources:
        raise top.fail("sources", "must name at least one source")
    names: set[str] = set()
    sources = tuple(_source(file, i, s, names) for i, s in enumerate(raw_sources))

    st = _Table(file, "split", top.get("split", dict, {}))
    method = st.choice("method", SPLIT_METHODS, "hash")
    dev_default, test_default = (0.05, 0.1) if method == "tail" else (0.1, 0.1)
    split = SplitSpec(method=method, dev=st.fraction("dev", dev_default), test=st.fraction("test", test_default))
    if split.dev + split.test >= 1.0:
        raise st.fail("test", f"dev + test must be below 1 (got {split.dev + split.test})")
    if method == "source":
        for i, s in enumerate(sources):
            if s.split is None:
                raise SpecError(f"{file}: sources[{i}].split: is required when split.method = 'source'")
    st.done()

    lt = _Table(file, "langid", top.get("langid", dict, {}))
    confusable = lt.get("confusable", list, CONFUSABLE.get(language, []))
    if not all(isinstance(c, str) and _LANG_RE.fullmatch(c) for c in confusable):
        raise lt.fail("confusable", "must be a list of ISO 639 codes")
    langid = LangIdSpec(
        backend=lt.choice("backend", ("py3langid",), "py3langid"),
        action=lt.choice("action", LANGID_ACTIONS, "reject"),
        min_score=lt.fraction("min_score", 0.5),
        confusable=tuple(confusable),
    )
    lt.done()

    ft = _Table(file, "filters", top.get("filters", dict, {}))
    d = FilterSpec()
    top_ngram = tuple(ft.get("top_ngram_fraction", list, list(d.top_ngram_fraction)))
    dup_ngram = tuple(ft.get("dup_ngram_fraction", list, list(d.dup_ngram_fraction)))
    if len(top_ngram) != 3 or len(dup_ngram) != 6 or not all(isinstance(x, (int, float)) for x in top_ngram + dup_ngram):
        raise ft.fail("top_ngram_fraction", "top_ngram_fraction needs 3 numbers (n = 2..4), dup_ngram_fraction 6 (n = 5..10)")
    filters = FilterSpec(
        enabled=ft.get("enabled", bool, True),
        max_record_bytes=ft.positive("max_record_bytes", d.max_record_bytes) or d.max_record_bytes,
        min_chars=ft.positive("min_chars", d.min_chars),
        max_chars=ft.positive("max_chars", d.max_chars),
        min_words=ft.positive("min_words", d.min_words),
        max_symbol_ratio=ft.get("max_symbol_ratio", float, d.max_symbol_ratio),
        max_digit_ratio=ft.get("max_digit_ratio", float, d.max_digit_ratio),
        min_alpha_ratio=ft.get("min_alpha_ratio", float, d.min_alpha_ratio),
        repetition_min_words=ft.positive("repetition_min_words", d.repetition_min_words),
        top_ngram_fraction=tuple(float(x) for x in top_ngram),
        dup_ngram_fraction=tuple(float(x) for x in dup_ngram),
    )
    ft.done()

    dt = _Table(file, "dedup", top.get("dedup", dict, {}))
    dedup = DedupSpec(
        exact=dt.get("exact", bool, True),
        near=dt.choice("near", NEAR_DUP_ACTIONS, "drop"),
        threshold=dt.fraction("threshold", 0.7),
        num_perm=dt.positive("num_perm", 112),
        bands=dt.positive("bands", 14),
        ngram=dt.positive("ngram", 5),
        shingle=dt.choice("shingle", ("char", "word"), "char"),
        seed=dt.positive("seed", 1),
    )
    if dedup.bands == 0 or dedup.num_perm % dedup.bands:
        raise dt.fail("bands", f"must divide num_perm ({dedup.num_perm}) evenly")
    if dedup.ngram == 0:
        raise dt.fail("ngram", "must be at least 1")
    dt.done()

    ot = _Table(file, "output", top.get("output", dict, {}))
    output = OutputSpec(rows_per_shard=ot.positive("rows_per_shard", 200_000) or 200_000)
    ot.done()

    augment = top.get("augment", dict, {})
    spec = CorpusSpec(
        name=name, language=language, sources=sources, path=file,
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(), text=text,
        license=top.get("license", str), description=top.get("description", str),
        split=split, langid=langid, filters=filters, dedup=dedup, output=output, augment=augment,
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
