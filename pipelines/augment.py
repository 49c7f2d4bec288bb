"""`python -m pipelines.augment OUT/NAME [--spec SPEC] [--version V] [--seed N] [Beam options]`

Applies the spec's `[augment]` steps to the train split of a snapshot (LATEST unless
`--version`) and writes `VERSION/augmented/`: Parquet shards `train/*.parquet` with `id, text,
parent_id, augmenter, params, seed` (loadable with `datasets.load_dataset("parquet",
data_dir=VERSION/augmented/train)`), `stats.json` per augmenter (inputs, produced, kept, rejected by
reason, failed, sentences per second) and `failed.jsonl` (records a backend could not take).
Only train is augmented; the pipeline (batching, retries, seeding) is in augmentation.py.
`--version` names a version of OUT/NAME, whose lock the command holds: a folder outside it
(`../other/V`) is refused (exit 2) before anything is read.

Exit codes: 0 ok, 1 failure, 2 usage or spec error.
"""
from __future__ import annotations

import sys
from typing import Any

from pipelines.augmentation import augment_snapshot
from pipelines.cli import command_parser, parse_command, print_result
from pipelines.errors import run_cli
from pipelines.spec import load_spec


def summary_text(stats: dict[str, Any]) -> str:
    lines = [f"augmented: {stats['total']['kept']} kept of {stats['total']['produced']} produced "
             f"from {stats['total']['inputs'] // max(1, len(stats['augmenters']))} train records"]
    for name, s in stats["augmenters"].items():
        rej = ", ".join(f"{r} {n}" for r, n in s["rejected"].items()) or "none"
        lines.append(f"  {name}: kept {s['kept']}/{s['produced']} (rejected: {rej}; failed {s['failed']}; "
                     f"{s['sentences_per_second']} sentences/s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("augment", __doc__, "print stats as JSON")
    parser.add_argument("corpus", help="OUT/NAME, the folder holding LATEST and the versions")
    parser.add_argument("--spec", help="spec whose [augment] table to use (default: the snapshot's own spec)")
    parser.add_argument("--version", help="snapshot version of CORPUS, e.g. 3f2a9c1b0d4e (default: LATEST)")
    parser.add_argument("--seed", type=int, help="global seed (default: [augment] seed)")
    args, beam_args = parse_command(parser, argv)
    spec = load_spec(args.spec) if args.spec else None
    stats = augment_snapshot(args.corpus, spec, args.version, args.seed, beam_args)
    print_result(stats, args.json, summary_text)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
