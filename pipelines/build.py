"""`python -m pipelines.build SPEC --out DIR [--mirror DIR] [Beam options]`

Turns the sources of a corpus spec into a clean, versioned, leakage-free snapshot
`DIR/NAME/VERSION/` and points `DIR/NAME/LATEST` at it, last and atomically.

Stages (each a named PTransform or DoFn): Read -> Normalise -> Segment -> IdentifyLanguage ->
Quality -> AssignSplit per source (cached by source checksum and settings, see source_cache.py),
then over the whole corpus ExactDedup -> NearDedup -> Write (build_corpus.py), into a staging folder
that snapshot.py publishes. Records move between steps in batches (records.py). Every unit read ends as exactly one of kept, rejected (with a reason) or
duplicate, and stats.json says so: input = kept + rejected + duplicates.

The version is a content hash of the spec, the source checksums and the pipeline code, so the
same inputs always give the same version and the same bytes.

A source rejected whole (binary, UTF-16 without `encoding`) and an empty result (no record
kept, an empty split) are said on stderr, one line each; an empty result is still published,
so it can be inspected, but exits 1 unless `--allow-empty`.

Exit codes: 0 ok, 1 a source or the build failed or the result is empty, 2 a usage or spec error.
"""
from __future__ import annotations

import sys
from typing import Any

from apache_beam.io.filesystems import FileSystems

from pipelines.build_corpus import stage_snapshot
from pipelines.cli import command_parser, parse_command, print_result
from pipelines.errors import ScarceError, run_cli
from pipelines.fetch import ResolvedSource, resolve_sources
from pipelines.langid import language_notice
from pipelines.lock import CorpusLock
from pipelines.notices import ALLOW_EMPTY_HINT, announce, warn
from pipelines.snapshot import clean_stale_staging, publish
from pipelines.spec import CorpusSpec, load_spec


def build(spec: CorpusSpec, out: str, mirror: str | None = None, beam_args: list[str] | None = None,
          resolved: list[ResolvedSource] | None = None) -> dict[str, Any]:
    """Build and publish a snapshot; returns a summary with the version, paths, stats and the
    warnings it printed (`empty` when nothing was kept or a split is empty)."""
    language = language_notice(spec)  # an unknown language refused here, before any work, or said
    warn(language)
    resolved = resolved if resolved is not None else resolve_sources(spec, mirror)
    corpus_dir = FileSystems.join(out, spec.name)
    with CorpusLock(corpus_dir):
        clean_stale_staging(corpus_dir)
        staged = stage_snapshot(spec, out, resolved, beam_args)
        target = publish(corpus_dir, staged.staging, staged.version)
    warnings, empty = announce(spec, staged.version, staged.stats)
    return {"name": spec.name, "version": staged.version, "path": target, "stats": staged.stats,
            "processed_sources": staged.processed, "warnings": language + warnings, "empty": bool(empty)}


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
                            out_help="output folder (local, gs:// or s3://)", mirror=True, allow_empty=True)
    parser.add_argument("spec", help="one corpus spec, e.g. corpora/gl-ctg.toml (pipelines.refresh takes several)")
    args, beam_args = parse_command(parser, argv)
    result = build(load_spec(args.spec), args.out, args.mirror, beam_args)
    print_result(result, args.json, summary_text)
    if result["empty"] and not args.allow_empty:
        raise ScarceError(f"{result['name']} {result['version']}: published, but empty (see the warnings above); "
                          f"{ALLOW_EMPTY_HINT}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
