"""The datatrove half of bench/build.py: `python bench/datatrove_build.py INPUT_DIR WORK_DIR TASKS`.

Reads INPUT_DIR/*.jsonl (one document a line, `text` and `id`), runs GopherRepetitionFilter and
datatrove's four MinHash dedup stages with LocalPipelineExecutor, writes under WORK_DIR and
prints one JSON line: wall seconds of the four executors' runs, documents after the filter,
documents kept, peak memory of one process and the size of its MinHash signature files.

It runs in its own process on purpose: LocalPipelineExecutor's worker pool (forkserver)
re-imports the `__main__` module in every worker, so a main module that imports Apache Beam
would add Beam's import time to every datatrove stage. This module imports datatrove only.
"""
from __future__ import annotations

import gzip
import json
import re
import resource
import sys
import time
from pathlib import Path

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature)
from datatrove.pipeline.filters import GopherRepetitionFilter
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.hashing import HashConfig
from datatrove.utils.text import TextNormConfig
from datatrove.utils.word_tokenizers import WordTokenizer

MINHASH = MinhashConfig(
    n_grams=5, num_buckets=14, hashes_per_bucket=8, seed=1,
    # Closest to ours: 32-bit shingle hashes, lower-cased text without punctuation. sha1, not
    # datatrove's default xxhash: datatrove 0.10.1 passes str to xxhash, which xxhash 4 refuses.
    hash_config=HashConfig(precision=32, hash_fc="sha1"),
    norm_config=TextNormConfig(norm_unicode_diacritics=False, norm_numbers=False),
)


class SplitTokenizer(WordTokenizer):
    """Whitespace words, as our filters split them. datatrove's defaults for en and gl need
    spaCy or Stanza models, which are not installed (and would time another tokenizer)."""

    def __init__(self) -> None:
        super().__init__("xx")

    def word_tokenize(self, text: str) -> list[str]:
        return text.split()

    def sent_tokenize(self, text: str) -> list[str]:
        return [line for line in text.splitlines() if line.strip()]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in re.finditer(r"[^\n]+", text)]


def stages(src: Path, tmp: Path, tasks: int) -> list[LocalPipelineExecutor]:
    """Filter + signatures, buckets, clusters, then the dedup filter that writes the output."""
    tok, logs = SplitTokenizer(), tmp / "logs"
    return [
        LocalPipelineExecutor([
            JsonlReader(str(src)),
            GopherRepetitionFilter(language=tok),
            JsonlWriter(str(tmp / "filtered")),
            MinhashDedupSignature(str(tmp / "sigs"), config=MINHASH, language=tok),
        ], tasks=tasks, workers=tasks, logging_dir=str(logs / "1")),
        LocalPipelineExecutor([
            MinhashDedupBuckets(str(tmp / "sigs"), str(tmp / "buckets"), config=MINHASH),
        ], tasks=MINHASH.num_buckets, workers=tasks, logging_dir=str(logs / "2")),
        LocalPipelineExecutor([
            MinhashDedupCluster(str(tmp / "buckets"), str(tmp / "remove_ids"), config=MINHASH),
        ], tasks=1, logging_dir=str(logs / "3")),
        LocalPipelineExecutor([
            JsonlReader(str(tmp / "filtered")),
            MinhashDedupFilter(str(tmp / "remove_ids")),
            JsonlWriter(str(tmp / "output")),
        ], tasks=tasks, workers=tasks, logging_dir=str(logs / "4")),
    ]


def count_jsonl(folder: Path) -> int:
    n = 0
    for path in folder.rglob("*.jsonl.gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            n += sum(1 for _ in f)
    return n


def main(argv: list[str]) -> int:
    src, tmp, tasks = Path(argv[0]), Path(argv[1]), int(argv[2])
    executors = stages(src, tmp, tasks)
    start = time.perf_counter()
    for executor in executors:
        executor.run()
    seconds = time.perf_counter() - start
    # Peak memory: this process or the largest of its pool workers (ru_maxrss, KiB on Linux).
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    signatures = sum(p.stat().st_size for p in (tmp / "sigs").rglob("*") if p.is_file())
    print(json.dumps({"seconds": seconds, "filtered_in": count_jsonl(tmp / "filtered"),
                      "kept": count_jsonl(tmp / "output"), "peak_mb": round(peak / 1024, 1),
                      "signature_mb": round(signatures / 1e6, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
