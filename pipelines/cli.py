"""What the commands (`python -m pipelines.build`, `.augment`, `.refresh`) share on the command line.

Each parses its own arguments and leaves the rest to Beam (`--runner`, `--direct_num_workers`,
...): an option neither takes is a usage error (exit 2), not something Beam silently ignores.
Each prints a human summary, or its result as JSON with `--json`. `--out` is checked before any
work: a file there is a usage error (exit 2), a folder that cannot be written a failure (exit 1).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Callable

from pipelines.errors import ScarceError, SpecError
from pipelines.runners import check_runner_options, pipeline_options

MIRROR_HELP = "serve URL sources from this folder (or set SCARCE_LM_MIRROR)"
ALLOW_EMPTY_HELP = "exit 0 even when no record is kept or a split is empty (they are still warned about)"


def command_parser(command: str, doc: str, json_help: str, out_help: str | None = None,
                   mirror: bool = False, allow_empty: bool = False) -> argparse.ArgumentParser:
    """The parser of `python -m pipelines.COMMAND`, described by the first paragraph of `doc`,
    with `--json` and, where given, `--out` (required), `--mirror` and `--allow-empty`."""
    parser = argparse.ArgumentParser(prog=f"python -m pipelines.{command}", description=doc.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    if out_help:
        parser.add_argument("--out", required=True, help=out_help)
    if mirror:
        parser.add_argument("--mirror", help=MIRROR_HELP)
    if allow_empty:
        parser.add_argument("--allow-empty", action="store_true", help=ALLOW_EMPTY_HELP)
    parser.add_argument("--json", action="store_true", help=json_help)
    return parser


def parse_command(parser: argparse.ArgumentParser, argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """Our arguments, and the rest for Beam (checked to be Beam's)."""
    args, beam_args = parser.parse_known_args(argv)
    check_beam_args(beam_args)
    if getattr(args, "out", None):
        check_out(args.out)
    return args, beam_args


def check_out(out: str) -> None:
    """A local `--out` must be a folder that can be written, or be creatable in one."""
    if "://" in out:
        return  # gs://, s3://: the file system says at the first write
    existing = Path(out).absolute()
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise SpecError(f"--out {out}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ScarceError(f"--out {out}: cannot write in {existing} (permission denied or read-only)")


def check_beam_args(beam_args: list[str]) -> None:
    """Options our parser did not take must be Beam's; anything else is a usage error (exit 2)."""
    known = pipeline_options([]).get_all_options(drop_default=False, retain_unknown_options=False)
    for arg in beam_args:
        if arg.startswith("--") and arg[2:].split("=", 1)[0] not in known:
            raise SpecError(f"unknown option {arg} (not a Beam pipeline option either)")
    check_runner_options(beam_args)


def print_result(result: dict[str, Any], as_json: bool, summary: Callable[[dict[str, Any]], str],
                 one_line: bool = False) -> None:
    """The result as JSON (`--json`; `one_line` for a command printing one object per input),
    else its human summary."""
    if as_json:
        print(json.dumps(result, sort_keys=True) if one_line else json.dumps(result, indent=2))
    else:
        print(summary(result))
