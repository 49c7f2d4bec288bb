"""What the commands (`python -m pipelines.build`, `.augment`, `.refresh`) share on the command line.

Each parses its own arguments and leaves the rest to Beam (`--runner`, `--direct_num_workers`,
`--dask_client_address`, ...: any flag of any registered PipelineOptions class, with its value,
wherever it stands). Anything neither takes (an unknown option, a short flag such as `-n 4`, a
positional argument too many) is a usage error (exit 2, one line) before any work, not something
Beam silently discards; so is a bad value of a Beam option.
Each prints a human summary, or its result as JSON with `--json`. `--out` is checked before any
work: a file there is a usage error (exit 2), a folder that cannot be written a failure (exit 1).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

from pipelines.errors import ScarceError, SpecError
from pipelines.runners import check_runner_options

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
    """Our arguments, and Beam's (each Beam flag with its value, taken out first, so that a
    value such as `--runner DaskRunner` is never read as one of our positional arguments)."""
    beam = beam_parser()
    ours, beam_args = split_beam_args(sys.argv[1:] if argv is None else list(argv), parser, beam)
    args, extra = parser.parse_known_args(ours)
    extra = [a for a in extra if a != "--"]  # argparse may leave the separator among the rest
    if extra:
        if extra[0].startswith("-"):
            raise SpecError(f"unknown option {extra[0]}: neither {parser.prog}'s nor a Beam pipeline option (see --help)")
        raise SpecError(f"unexpected argument {extra[0]}: {parser.prog} takes no other positional argument there "
                        f"(see --help)")
    check_beam_args(beam_args, beam)
    if getattr(args, "out", None):
        check_out(args.out)
    return args, beam_args


class _BeamParser(_BeamArgumentParser):
    def error(self, message: str) -> None:  # a bad value: one line, exit 2, not argparse's usage and exit
        raise SpecError(message)


def beam_parser() -> argparse.ArgumentParser:
    """Every flag that a registered PipelineOptions class (any depth) takes, as Beam's parser
    takes it: by its spelling, whatever its dest (`--dask_client_address` is `address`)."""
    parser = _BeamParser(allow_abbrev=False, add_help=False, conflict_handler="resolve")
    todo, seen = list(PipelineOptions.__subclasses__()), set()
    while todo:
        cls = todo.pop(0)
        if cls not in seen:
            seen.add(cls)
            todo += cls.__subclasses__()
            if "_add_argparse_args" in cls.__dict__:
                cls._add_argparse_args(parser)
    return parser


def split_beam_args(argv: list[str], ours: argparse.ArgumentParser,
                    beam: argparse.ArgumentParser) -> tuple[list[str], list[str]]:
    """`argv` as (ours, Beam's): a flag spelled exactly as one of Beam's, and not ours, goes to
    Beam with the value it takes (`--flag value` or `--flag=value`); all else, and all after
    `--`, stays ours."""
    mine: list[str] = []
    theirs: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        flag = arg.split("=", 1)[0]
        action = beam._option_string_actions.get(flag) if flag.startswith("--") else None
        if arg == "--":
            return mine + argv[i:], theirs
        if action is None or flag in ours._option_string_actions:
            mine.append(arg)
            i += 1
            continue
        # the value: none after `=` or for a switch; an optional one (nargs "?") not if an option follows
        takes = "=" not in arg and action.nargs != 0 and i + 1 < len(argv) and \
            not (action.nargs == "?" and argv[i + 1].startswith("-"))
        theirs += argv[i:i + 1 + takes]
        i += 1 + takes
    return mine, theirs


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


def check_beam_args(beam_args: list[str], beam: argparse.ArgumentParser | None = None) -> None:
    """Beam's arguments must all be Beam's, with good values; anything else is a usage error (exit 2)."""
    _, unknown = (beam or beam_parser()).parse_known_args(beam_args)
    if unknown:
        raise SpecError(f"unknown option {unknown[0]} (not a Beam pipeline option either)")
    check_runner_options(beam_args)


def print_result(result: dict[str, Any], as_json: bool, summary: Callable[[dict[str, Any]], str],
                 one_line: bool = False) -> None:
    """The result as JSON (`--json`; `one_line` for a command printing one object per input),
    else its human summary."""
    if as_json:
        print(json.dumps(result, sort_keys=True) if one_line else json.dumps(result, indent=2))
    else:
        print(summary(result))
