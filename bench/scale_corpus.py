"""A synthetic corpus of >= 1,000,000 sentences for the corpus-build scale benchmark.

`.venv/bin/python bench/scale_corpus.py OUT_FOLDER [--sentences N]` (from the project root).

The shared test corpora are far too small to show how a build scales (gl-ctg has 4,000
sentences), and a large corpus of unrelated text would give the near-duplicate stage nothing to
do. So this takes the real sentences (gl-ctg's three files, Tiny Shakespeare cut into sentences)
as bases and adds many variants of each made by the project's own `NoiseAugmenter` (one keyboard
typo a line): each base becomes a cluster of near-copies, as scraped text has (boilerplate,
reposts, OCR and typing variants). Every line is a base sentence or the augmenter's output.
Lines are shuffled with a fixed seed so near-copies are not adjacent, and dealt into SHARDS
plain-text files that a spec `scale.toml` next to them reads as local `lines` sources.

Offline and deterministic: the same arguments give byte-identical files. The output folder name
carries a hash of the arguments, this file's and the augmenter's source and the inputs' sizes, so
a second call returns at once; files are written to a temporary folder, then renamed.
"""
from __future__ import annotations

import argparse
import hashlib
import random
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from augment.noise import NoiseAugmenter  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
GL_FILES = [DATA / "gl-ctg" / f"{s}.txt" for s in ("train", "dev", "test")]
EN_FILE = DATA / "tinyshakespeare" / "input.txt"
# Output depends on these too: a change to the augmenter must not reuse an old corpus.
CODE = [Path(__file__).resolve(), ROOT / "augment" / "noise.py", ROOT / "augment" / "base.py"]
SEED, SHARDS = 13, 4
# One edit a line (rate * words rounds to 0, and the augmenter makes at least one): at a rate of
# 0.05 the long Galician sentences got 2 typos and their word 5-gram Jaccard fell to ~0.6.
NOISE = {"ops": ("typo",), "rate": 0.01}
# Bases need >= 12 words: a one-word edit in a shorter line breaks most of its word 5-grams, and
# Shakespeare's short lines ("Speak, speak.") would give the same few variants over and over.
MIN_CHARS, MIN_WORDS = 20, 12
MIN_CLUSTER = 20  # a small corpus takes fewer bases, so its clusters stay large too

SPEC = """\
# Written by bench/scale_corpus.py: {lines} lines = {bases} real sentences (gl-ctg, Tiny
# Shakespeare) + NoiseAugmenter variants of them, shuffled. Benchmark input only.
name = "scale"
language = "gl"
license = "gl-ctg: CC BY-NC-SA 3.0 (research and testing use only); Tiny Shakespeare: public domain"
description = "Scale benchmark: real sentences and clusters of noised near-copies of them."
{sources}
[split]
method = "hash"

# English lines are flagged, not rejected, so every line reaches the dedup stages.
[langid]
action = "flag"
"""


def base_sentences() -> dict[str, list[str]]:
    """Real sentences by language; splitlines() so no base holds a character a reader splits on."""
    gl = [s.strip() for f in GL_FILES for s in f.read_text(encoding="utf-8").splitlines()]
    en = []
    for speech in EN_FILE.read_text(encoding="utf-8").split("\n\n"):
        lines = speech.strip().splitlines()
        if lines and lines[0].endswith(":"):  # the speaker's name
            lines = lines[1:]
        en += re.split(r"(?<=[.!?])\s+", " ".join(s.strip() for s in lines))
    keep = lambda s: len(s) >= MIN_CHARS and len(s.split()) >= MIN_WORDS  # noqa: E731
    return {"gl": sorted(set(filter(keep, gl))), "en": sorted(set(filter(keep, en)))}


def generate(sentences: int) -> tuple[list[str], int]:
    """`sentences` lines, shuffled, and how many of them are bases."""
    rng = random.Random(SEED)
    bases = base_sentences()
    total = sum(map(len, bases.values()))
    take = min(total, max(1, sentences // MIN_CLUSTER))
    chosen = set(rng.sample(range(total), take)) if take < total else None
    if chosen is not None:  # an even sample over both languages, in base order
        flat = [(lang, s) for lang, group in bases.items() for s in group]
        bases = {lang: [s for i, (l2, s) in enumerate(flat) if l2 == lang and i in chosen] for lang in bases}
    lines = [s for group in bases.values() for s in group][:sentences]
    need = sentences - len(lines)
    if need > 0:
        per_base = -(-need // take)
        # One call per language with `per_base` variants each: the augmenter seeds one Random per
        # text, so this costs one seeding per base instead of one per variant.
        rounds: list[list[str]] = [[] for _ in range(per_base)]
        for lang, group in bases.items():
            out = NoiseAugmenter(lang, variants=per_base, **NOISE).augment_batch(group, SEED)
            for k in range(per_base):
                rounds[k] += [v[k] for v in out if k < len(v)]
        # Variant k of every base before variant k + 1 of any: the cut spreads evenly.
        lines += [v for r in rounds for v in r][:need]
    rng.shuffle(lines)
    return lines, min(take, sentences)


def fingerprint(sentences: int) -> str:
    h = hashlib.sha256(f"{sentences}\0{SEED}\0{SHARDS}\0".encode())
    for f in CODE:
        h.update(f.read_bytes())
    for f in GL_FILES + [EN_FILE]:
        h.update(f"{f.name}\0{f.stat().st_size}\0".encode())
    return h.hexdigest()[:12]


def make_scale_corpus(folder: Path, sentences: int = 1_000_000) -> Path:
    """Write (or find) the corpus under `folder`; returns the path of its spec, `scale.toml`."""
    final = Path(folder) / f"scale-{sentences}-{fingerprint(sentences)}"
    if (final / "scale.toml").exists():  # the folder only appears, by rename, once complete
        return final / "scale.toml"
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted run
    tmp.mkdir(parents=True)
    lines, bases = generate(sentences)
    sources = ""
    for i in range(SHARDS):
        name = f"shard-{i}"
        shard = lines[i * len(lines) // SHARDS:(i + 1) * len(lines) // SHARDS]
        (tmp / f"{name}.txt").write_text("".join(s + "\n" for s in shard), encoding="utf-8", newline="\n")
        # segment = false: one sentence a line already, no sentence splitter.
        sources += f'\n[[sources]]\nname = "{name}"\npath = "{name}.txt"\nformat = "lines"\nsegment = false\n'
    spec = SPEC.format(lines=len(lines), bases=bases, sources=sources)
    (tmp / "scale.toml").write_text(spec, encoding="utf-8", newline="\n")
    try:
        tmp.rename(final)
    except OSError:  # another process finished first: keep its copy
        shutil.rmtree(tmp)
    return final / "scale.toml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write the corpus under")
    parser.add_argument("--sentences", type=int, default=1_000_000, help="lines to make (default 1,000,000)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    spec = make_scale_corpus(args.out, args.sentences)
    seconds = time.perf_counter() - start
    shards = sorted(spec.parent.glob("shard-*.txt"))
    lines = sum(f.read_bytes().count(b"\n") for f in shards)
    print(f"{spec}\n{lines} lines, {sum(f.stat().st_size for f in shards)} bytes, {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
