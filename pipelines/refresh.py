"""`python -m pipelines.refresh SPEC... --out DIR [--mirror DIR] [--keep N] [--json] [--then CMD] [--allow-empty] [Beam options]`

Keeps corpus snapshots fresh on a schedule. For each spec, under a per-corpus `fcntl` lock:

1. fingerprint every source (sha256 of local files; unpinned URLs by a conditional request
   with the stored ETag / Last-Modified, then the sha256 of what arrives) and compare the
   resulting version with `LATEST`: unchanged means exit 0 at once, nothing written;
2. reprocess only the sources whose fingerprint changed (the rest come from the per-source
   cache), then redo dedup and split over all of them, every record of the previous snapshot
   keeping its split (new near-copies of a test sentence join test, never train);
3. build into a staging folder and validate it against the previous snapshot: the accounting
   invariant holds, no split lost more than `--max-shrink` of its records, no previous record
   changed split, and (unless `--allow-empty`) it keeps some record in every split. A failure
   publishes nothing, says which rule failed and exits 1;
4. rename the version into place, replace `LATEST` last, prune to `--keep N` versions (never
   the one `LATEST` names), and run `--then` (no shell) when a version was published; its
   command is looked up before anything runs.

`--then` is never lost: a version published with `--then` is first recorded as owing it
(`OUT/NAME/.then-pending`, written before `LATEST` moves), and the record goes only once the
command exits 0. So a spec that fails after another one published (the others are still
refreshed, every failure is one `error:` line) still runs `--then` once for the published ones,
and a `--then` that failed, or a run killed before it, is run by the next refresh of that corpus
with `--then`, even when it is unchanged.

A `LATEST` naming no complete snapshot (deleted, mistyped) is repaired, as build does: the
newest complete version stands in as the previous one, and the refresh publishes.

Exit codes: 0 ok (published or unchanged), 1 failure (validation, source, --then),
2 usage or spec error (a --then command that does not exist too), 75 another refresh holds the
lock (try again later); with several failures, the last one's.
"""
from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from common.files import write_text_atomic
from common.snapshot_format import LATEST, MANIFEST, SPLITS, read_latest, verify_shards
from pipelines.build_corpus import stage_snapshot
from pipelines.cli import command_parser, parse_command, print_result
from pipelines.errors import ScarceError, SpecError, run_cli
from pipelines.fetch import HttpState, resolve_sources
from pipelines.langid import language_notice
from pipelines.lock import Busy, CorpusLock
from pipelines.notices import ALLOW_EMPTY_HINT, announce, warn
from pipelines.snapshot import HISTORY, Staged, clean_stale_staging, code_sha256, publish, remove_path, snapshot_version
from pipelines.spec import CorpusSpec, load_spec


THEN_PENDING = ".then-pending"  # in OUT/NAME: the published version whose --then has not yet succeeded


class ValidationError(ScarceError):
    """The staged snapshot breaks a publication rule; nothing was published."""


def split_ids(version_dir: str | Path) -> dict[str, str]:
    """id -> split of a published (or staged) snapshot, from its Parquet shards' id column."""
    out: dict[str, str] = {}
    for split in SPLITS:
        folder = Path(version_dir) / split
        for shard in sorted(folder.glob("*.parquet")):
            for i in pq.read_table(shard, columns=["id"]).column("id").to_pylist():
                out[i] = split
    return out


def validate(previous: dict[str, str], staged: Staged, max_shrink: float) -> list[str]:
    """Every publication rule the staged snapshot breaks (empty when it may be published)."""
    problems = []
    s = staged.stats
    if s["input"] != s["kept"] + s["rejected"] + s["duplicates"]:
        problems.append(f"accounting: input {s['input']} != kept {s['kept']} + rejected {s['rejected']} "
                        f"+ duplicates {s['duplicates']}")
    current = split_ids(staged.staging)
    for split in SPLITS:
        before = sum(1 for v in previous.values() if v == split)
        after = sum(1 for v in current.values() if v == split)
        if before and (before - after) / before > max_shrink:
            problems.append(f"shrink: split {split} would lose {100 * (before - after) / before:.0f}% of its records "
                            f"({before} -> {after}), over the limit of {100 * max_shrink:.0f}% (--max-shrink)")
    moved = sorted((i, old, current[i]) for i, old in previous.items() if i in current and current[i] != old)
    if moved:
        i, old, new = moved[0]
        problems.append(f"moved: {len(moved)} previous records would change split (e.g. {i}: {old} -> {new})")
    return problems


def versions_in_order(corpus_dir: Path) -> list[str]:
    """Published versions, oldest first: by HISTORY, then any others by modification time."""
    present = {p.name for p in corpus_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
               and (p / MANIFEST).exists()}
    history = []
    if (corpus_dir / HISTORY).exists():
        history = [v for v in (corpus_dir / HISTORY).read_text().split() if v in present]
    seen = list(dict.fromkeys(history))
    rest = sorted(present - set(seen), key=lambda v: (corpus_dir / v).stat().st_mtime)
    return rest + seen


def prune(corpus_dir: Path, keep: int) -> list[str]:
    """Delete all but the `keep` newest versions; the one LATEST names is never deleted."""
    latest = read_latest(str(corpus_dir))
    ordered = versions_in_order(corpus_dir)
    doomed = [v for v in ordered[:max(0, len(ordered) - keep)] if v != latest]
    for v in doomed:
        shutil.rmtree(corpus_dir / v)
    return doomed


def previous_version(corpus_dir: Path, latest: str | None) -> str | None:
    """The version to validate against and pin to: LATEST's; when LATEST names no complete
    snapshot, the newest complete one (said on stderr), or None when there is none."""
    if latest is None or (corpus_dir / latest / MANIFEST).exists():
        return latest
    versions = versions_in_order(corpus_dir)
    stand_in = versions[-1] if versions else None
    warn([f"{corpus_dir}: {LATEST} names {latest}, which is not a complete snapshot; comparing with "
          f"{stand_in or 'no previous version'} instead, and this refresh rewrites {LATEST}"])
    return stand_in


def pending_then(corpus_dir: Path) -> str | None:
    """The published version of `corpus_dir` still owed its --then (THEN_PENDING); None when none is."""
    try:
        version = (corpus_dir / THEN_PENDING).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return version if version and (corpus_dir / version / MANIFEST).is_file() else None


def then_paid(corpus_dir: Path, version: str) -> None:
    """--then ran for `version`: drop the record, unless a later publication replaced it. A busy
    corpus keeps it, and its next refresh with --then runs the command again (at least once)."""
    try:
        with CorpusLock(corpus_dir):
            if pending_then(corpus_dir) == version:
                (corpus_dir / THEN_PENDING).unlink()
    except Busy:
        pass


def refresh(spec: CorpusSpec, out: str, mirror: str | None = None, keep: int | None = None,
            beam_args: list[str] | None = None, max_shrink: float = 0.2, allow_empty: bool = False,
            owe_then: bool = False) -> dict[str, Any]:
    """Refresh one corpus; returns the status document that --json prints. `owe_then`: a version
    published is recorded as owing --then (THEN_PENDING) before LATEST names it; the document's
    `then_pending` is the version owed, if any."""
    corpus_dir = Path(out) / spec.name
    language = language_notice(spec)  # an unknown language refused before any work; said when building
    with CorpusLock(corpus_dir):
        stale = clean_stale_staging(str(corpus_dir))
        state = HttpState(corpus_dir / ".cache" / "http.json")
        resolved = resolve_sources(spec, mirror, http_state=state)
        latest = read_latest(str(corpus_dir))
        previous_name = previous_version(corpus_dir, latest)
        version = snapshot_version(spec, resolved, code_sha256())
        if latest == version and previous_name == latest:
            owed = pending_then(corpus_dir)
            return {"status": "unchanged", "version": version, "name": spec.name, **({"then_pending": owed} if owed else {})}
        warn(language)
        previous_dir = corpus_dir / previous_name if previous_name else None
        if previous_dir:
            verify_shards(str(previous_dir))  # its splits pin the new one's: they must be as published
        previous_manifest = json.loads((previous_dir / MANIFEST).read_text()) if previous_dir else {"sources": []}
        before = {s["name"]: s["sha256"] for s in previous_manifest["sources"]}
        changed = [r.source.name for r in resolved if before.get(r.source.name) != r.sha256]
        changed += [name for name in before if name not in {r.source.name for r in resolved}]
        staged = stage_snapshot(spec, out, resolved, beam_args, pins_from=str(previous_dir) if previous_dir else None)
        previous = split_ids(previous_dir) if previous_dir else {}
        problems = validate(previous, staged, max_shrink)
        warnings, empty = announce(spec, staged.version, staged.stats)
        if empty and not allow_empty:
            problems.append(f"empty: the new version is empty (see the warnings above); {ALLOW_EMPTY_HINT}")
        if problems:
            remove_path(staged.staging)
            still = f"{LATEST} still names {latest}" if latest else f"no {LATEST} was written"
            raise ValidationError(f"refresh of {spec.name} not published: {'; '.join(problems)}; {still}")
        current = split_ids(staged.staging)
        if owe_then:  # before LATEST moves: a run killed after publishing still owes --then
            write_text_atomic(corpus_dir / THEN_PENDING, staged.version + "\n")
        publish(str(corpus_dir), staged.staging, staged.version)
        state.save()
        pruned = prune(corpus_dir, keep) if keep else []
    return {
        "status": "published", "name": spec.name, "version": staged.version, "previous": previous_name,
        "added": len(current.keys() - previous.keys()), "removed": len(previous.keys() - current.keys()),
        "changed_sources": sorted(changed), "processed_sources": sorted(staged.processed),
        "pruned": pruned, "stale_staging_removed": stale, "warnings": language + warnings,
        **({"then_pending": staged.version} if owe_then else {}),
    }


def summary_text(result: dict[str, Any]) -> str:
    if result["status"] == "unchanged":
        owed = f"; --then still owed for {result['then_pending']}" if result.get("then_pending") else ""
        return f"{result['name']}: unchanged ({result['version']}){owed}"
    return (f"{result['name']}: published {result['version']} (was {result['previous']}): +{result['added']} "
            f"-{result['removed']} records; changed sources: {', '.join(result['changed_sources']) or 'none'}")


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("refresh", __doc__, "print one JSON object per spec",
                            out_help="output folder holding OUT/NAME/LATEST", mirror=True, allow_empty=True)
    parser.add_argument("specs", nargs="+", help="corpus specs to refresh")
    parser.add_argument("--keep", type=int, help="keep this many newest versions (LATEST's is always kept)")
    parser.add_argument("--max-shrink", type=float, default=0.2, help="largest share of a split's records a refresh may drop (0.2)")
    parser.add_argument("--then", help="command to run (no shell) after a new version is published")
    args, beam_args = parse_command(parser, argv)
    if args.keep is not None and args.keep < 1:
        raise SpecError(f"--keep must be at least 1 (got {args.keep})")
    if not 0 <= args.max_shrink < 1:
        raise SpecError(f"--max-shrink must be a fraction in [0, 1) (got {args.max_shrink})")
    then = then_command(args.then) if args.then is not None else None
    specs = [load_spec(s) for s in args.specs]
    owed, failures = refresh_all(specs, args, beam_args, then is not None)
    if then and owed:
        try:
            run_then(then, args.then)
        except ScarceError as exc:
            failures.append(exc)  # the records stay: the next refresh with --then runs it again
        else:
            for corpus_dir, version in owed:
                then_paid(corpus_dir, version)
    for exc in failures[:-1]:
        print(f"error: {exc}", file=sys.stderr)
    if failures:
        raise failures[-1]
    return 0


def refresh_all(specs: list[CorpusSpec], args: Any, beam_args: list[str],
                owe_then: bool) -> tuple[list[tuple[Path, str]], list[ScarceError]]:
    """Refresh every spec, a failing one not stopping the others: ((corpus folder, version owed
    its --then) of each corpus owing one, the failures in order)."""
    owed: list[tuple[Path, str]] = []
    failures: list[ScarceError] = []
    for spec in specs:
        corpus_dir = Path(args.out) / spec.name
        try:
            result = refresh(spec, args.out, args.mirror, args.keep, beam_args, args.max_shrink, args.allow_empty,
                             owe_then=owe_then)
        except ScarceError as exc:
            failures.append(exc)
            version = pending_then(corpus_dir) if owe_then else None  # owed from an earlier run
        else:
            print_result(result, args.json, summary_text, one_line=True)
            version = result.get("then_pending") if owe_then else None
        if version:
            owed.append((corpus_dir, version))
    return owed, failures


def run_then(then: list[str], text: str) -> None:
    try:
        code = subprocess.run(then).returncode
    except OSError as exc:  # gone or made unrunnable since the check
        raise ScarceError(f"--then command could not start ({exc.strerror}): {text}") from None
    if code:
        raise ScarceError(f"--then command exited {code}: {text}")


def then_command(text: str) -> list[str]:
    """--then split as the shell would (it runs without one), its program found on PATH now:
    a typo is a usage error before the refresh, not a failure after it."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise SpecError(f"--then {text!r}: {exc}") from None
    if not words:
        raise SpecError("--then: empty command")
    if shutil.which(words[0]) is None:
        raise SpecError(f"--then: command not found: {words[0]} (in {text!r})")
    return words


if __name__ == "__main__":
    sys.exit(run_cli(main))
