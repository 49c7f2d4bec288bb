"""Offline thesauri: WordNet (through NLTK) and LibreOffice MyThes files (Debian's `mythes-*`).

WordNet: NLTK's own data when installed, else Debian's `wordnet-base` files. Debian ships no
`lexnames` file (NLTK's reader needs it) and puts `index.sense` in `wordnet-sense-index`, so we
assemble a private NLTK data folder of copies (NLTK refuses links) plus the standard lexnames table,
under the user's cache; system folders are never touched.

MyThes: `th_LANG_*.idx` gives each entry's byte offset in the `.dat` file; the first line of both
names the encoding. 26 languages in Debian; Galician is `mythes-gl`.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Protocol

from augment.base import AugmenterError
from common.files import replacing, user_cache_dir, write_text_atomic

DEBIAN_WORDNET = Path("/usr/share/wordnet")
MYTHES_DIRS = (Path("/usr/share/mythes"), Path("/usr/share/hunspell"), Path("/usr/share/myspell/dicts"))
# The 45 lexicographer files of WordNet 3.0, as NLTK's reader expects them in `lexnames`.
LEXNAMES = """adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute
noun.body noun.cognition noun.communication noun.event noun.feeling noun.food noun.group
noun.location noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession
noun.process noun.quantity noun.relation noun.shape noun.state noun.substance noun.time
verb.body verb.change verb.cognition verb.communication verb.competition verb.consumption
verb.contact verb.creation verb.emotion verb.motion verb.perception verb.possession verb.social
verb.stative verb.weather adj.ppl""".split()
_LEX_CATEGORY = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}
_WORDNET_FILES = ("data.adj", "data.adv", "data.noun", "data.verb", "index.adj", "index.adv",
                  "index.noun", "index.verb", "adj.exc", "adv.exc", "noun.exc", "verb.exc", "index.sense")
_PAREN = re.compile(r"\([^)]*\)")


class Thesaurus(Protocol):
    def synonyms(self, word: str) -> list[str]:
        """Synonyms of `word` (lower case in, dictionary forms out), without `word` itself."""


def debian_wordnet_root(source: Path = DEBIAN_WORDNET) -> Path:
    """A private NLTK data root whose corpora/wordnet links to Debian's files, plus lexnames."""
    missing = [f for f in _WORDNET_FILES if not (source / f).exists()]
    if missing:
        hint = "wordnet-sense-index" if missing == ["index.sense"] else "wordnet-base wordnet-sense-index"
        raise AugmenterError(f"WordNet files missing in {source}: {', '.join(missing)}; install Debian's {hint} "
                             "(apt-get install wordnet-base wordnet-sense-index) or NLTK's wordnet data")
    root = user_cache_dir() / "nltk_data"
    target = root / "corpora" / "wordnet"
    target.mkdir(parents=True, exist_ok=True)
    for name in _WORDNET_FILES:
        link = target / name
        if not link.exists() or link.stat().st_size != (source / name).stat().st_size:
            with replacing(link) as tmp:
                # A copy: NLTK refuses symbolic links that leave its root and hard-linked files.
                shutil.copyfile(source / name, tmp)
    lexnames = target / "lexnames"
    if not lexnames.exists():
        text = "".join(f"{i:02d}\t{n}\t{_LEX_CATEGORY[n.split('.')[0]]}\n" for i, n in enumerate(LEXNAMES))
        write_text_atomic(lexnames, text)
    return root


class WordNetThesaurus:
    """English synonyms from WordNet lemmas sharing a synset with the word."""

    def __init__(self) -> None:
        from nltk.corpus.reader.wordnet import WordNetCorpusReader
        import nltk

        try:
            path = nltk.data.find("corpora/wordnet")
            self.reader = WordNetCorpusReader(str(path), None)
            self.origin = "nltk_data"
        except LookupError:
            root = debian_wordnet_root()
            # NLTK only opens files under its data path, so the private root joins it.
            if str(root) not in nltk.data.path:
                nltk.data.path.append(str(root))
            self.reader = WordNetCorpusReader(str(root / "corpora" / "wordnet"), None)
            self.origin = "debian"
        self._cache: dict[str, list[str]] = {}

    def synonyms(self, word: str) -> list[str]:
        if word not in self._cache:
            out: dict[str, None] = {}
            for synset in self.reader.synsets(word):
                for lemma in synset.lemma_names():
                    w = lemma.replace("_", " ")
                    if w.lower() != word and w.isascii() and w.islower():  # no proper nouns
                        out.setdefault(w, None)
            self._cache[word] = list(out)
        return self._cache[word]


def find_mythes(language: str, dirs: tuple[Path, ...] = MYTHES_DIRS) -> Path:
    """The MyThes index for `language` (e.g. gl -> th_gl_ES_v2.idx)."""
    for d in dirs:
        hits = sorted(d.glob(f"th_{language}_*.idx")) + sorted(d.glob(f"th_{language}.idx"))
        if hits:
            return hits[0]
    have = sorted({p.name.split("_")[1] for d in dirs if d.is_dir() for p in d.glob("th_*.idx")})
    raise AugmenterError(f"no MyThes thesaurus for {language!r} (installed: {', '.join(have) or 'none'}); "
                         f"install Debian's mythes-{language}")


class MyThesThesaurus:
    """Synonyms from a LibreOffice thesaurus: every meaning's alternatives, notes in () removed."""

    def __init__(self, language: str, idx: Path | None = None):
        self.idx = idx or find_mythes(language)
        self.dat = self.idx.with_suffix(".dat")
        with open(self.idx, "rb") as f:
            self.encoding = f.readline().decode("ascii").strip() or "utf-8"
            self.offsets: dict[str, int] = {}
            for raw in f:
                word, _, offset = raw.decode(self.encoding).rstrip("\n").rpartition("|")
                if word and offset.isdigit():
                    self.offsets.setdefault(word.lower(), int(offset))
        self._data = self.dat.read_bytes()
        self._cache: dict[str, list[str]] = {}

    def synonyms(self, word: str) -> list[str]:
        if word in self._cache:
            return self._cache[word]
        out: dict[str, None] = {}
        offset = self.offsets.get(word)
        if offset is not None:
            end = self._data.index(b"\n", offset)
            head = self._data[offset:end].decode(self.encoding)
            _, _, count = head.rpartition("|")
            pos = end + 1
            for _ in range(int(count) if count.isdigit() else 0):
                end = self._data.find(b"\n", pos)
                end = len(self._data) if end < 0 else end
                line = self._data[pos:end].decode(self.encoding)
                pos = end + 1
                for alt in line.split("|")[1:]:
                    # Notes in parentheses go, and so do stray brackets of unbalanced notes.
                    alt = " ".join(_PAREN.sub(" ", alt).replace("(", " ").replace(")", " ").split())
                    if alt and alt.lower() != word and len(alt.split()) <= 3:
                        out.setdefault(alt, None)
        self._cache[word] = list(out)
        return self._cache[word]


def make_thesaurus(backend: str, language: str) -> Thesaurus:
    if backend == "wordnet":
        if language not in ("en", "eng"):
            raise AugmenterError(f"the wordnet backend is English only (corpus language {language!r}); use backend = \"mythes\"")
        return WordNetThesaurus()
    if backend == "mythes":
        return MyThesThesaurus(language)
    raise AugmenterError(f"unknown thesaurus backend {backend!r} (wordnet, mythes)")
