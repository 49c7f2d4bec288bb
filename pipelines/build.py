"""`python -m pipelines.build SPEC --out DIR [--mirror DIR] [Beam options]`

Turns the sources of a corpus spec into a clean, versioned, leakage-free snapshot
`DIR/NAME/VERSION/` and points `DIR/NAME/LATEST` at it, last and atomically.

Stages (each a named PTransform): Read -> Normalise -> Segment -> IdentifyLanguage -> Quality
-> AssignSplit per source (cached by source checksum and settings, see source_cache.py), then
over the whole corpus ExactDedup -> NearDedup -> Write (corpus.py), into a staging folder that
snapshot.py publishes. Every unit read ends as exactly one of kept, rejected (with a reason) or
duplicate, and stats.json says so: input = kept + rejected + duplicates.

The version is a content hash of the spec, the source checksums and the pipeline code, so the
same inputs always give the same version and the same bytes.

Exit codes: 0 ok, 1 a source or the build failed, 2 a usage or spec error.
"""
from __future__ import annotations

import sys
from typing import Any

from apache_beam.io.filesystems import FileSystems

from pipelines.cli import command_parser, parse_command, print_result
from pipelines.corpus import stage_snapshot
from pipelines.errors import run_cli
from pipelines.fetch import ResolvedSource, resolve_sources
from pipelines.lock import CorpusLock
from pipelines.snapshot import clean_stale_staging, publish
from pipelines.spec import CorpusSpec, load_spec


def build(spec: CorpusSpec, out: str, mirror: str | None = None, beam_args: list[str] | None = None,
          resolved: list[ResolvedSource] | None = None) -> dict[str, Any]:
    """Build and publish a snapshot; returns a summary with the version, paths and stats."""
    resolved = resolved if resolved is not None else resolve_sources(spec, mirror)
    corpus_dir = FileSystems.join(out, spec.name)
    with CorpusLock(corpus_dir):
        clean_stale_staging(corpus_dir)
        staged = stage_snapshot(spec, out, resolved, beam_args)
        target = publish(corpus_dir, staged.staging, staged.version)
    return {"name": spec.name, "version": staged.version, "path": target, "stats": staged.stats,
            "processed_sources": staged.processed}


def summary_text(result: dict[str, Any]) -> str:
    s = result["stats"]
    lines = [f"{result['name']} {result['version']} -> {result['path']}",
             f"  input {s['input']} = kept {s['kept']} + rejected {s['rejected']} + duplicates {s['duplicates']}",
             "  splits: " + ", ".join(f"{k} {v}" for k, v in s["splits"].items())]
    for stage, reasons in s["stages"].items():
        lines.append(f"  {stage}: " + ", ".join(f"{r} {n}" for r, n in reasons.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("build", __doc__, "print the summary as JSON",
                            out_help="output folder (local, gs:// or s3://)", mirror=True)
    parser.add_argument("spec", help="corpus spec, e.g. corpora/gl-ctg.toml")
    args, beam_args = parse_command(parser, argv)
    result = build(load_spec(args.spec), args.out, args.mirror, beam_args)
    print_result(result, args.json, summary_text)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
