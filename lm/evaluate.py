"""`python -m lm.evaluate MODEL --split dev|test [--corpus OUT/NAME] [--json]`

Bits per character on the raw text of a held-out split (`lm.scoring.evaluate`: windows, joining
rule and what is scored are described there).

Prints `bits_per_char`, `nats_per_char`, `nll_bits`, `chars`, `tokens` and perplexity per token
(`ppl`); `--json` prints one JSON object. MODEL is anything `lm.loader.load_model` reads (a run
folder or an export). Exit codes: 0 ok, 1 missing/corrupt model (non-finite weights too), empty split
or a non-finite score (never printed), 2 usage.
"""
from __future__ import annotations

import argparse
import json
import sys

from lm import parallel
from lm.errors import run_cli
from lm.loader import load_model
from lm.scoring import describe, evaluate


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lm.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a run folder (python -m lm.train --out RUN)")
    p.add_argument("--split", required=True, choices=("dev", "test"))
    p.add_argument("--corpus", help="OUT/NAME or a version folder (default: the run's own)")
    p.add_argument("--stride", type=int, help="tokens a window advances (default: context / 2)")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    parallel.start_command()
    result = evaluate(load_model(args.model, args.checkpoint), args.split, args.corpus, args.stride)
    print(json.dumps(result) if args.json else describe(result))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
