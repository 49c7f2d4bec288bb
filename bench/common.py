"""What every benchmark shares: the machine description, timing, results files, the README
templates and the README section writer."""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "bench" / "README.md"
TEMPLATES = ROOT / "bench" / "templates"


def machine(*packages: str) -> dict[str, Any]:
    """CPU, Python and the versions of `packages`, for the results JSON."""
    cpu = ""
    if Path("/proc/cpuinfo").exists():
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    return {"cpu_count": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "platform": platform.platform(), **{p: importlib.metadata.version(p) for p in packages}}


def load_1m() -> float:
    """The 1-minute load average, rounded: other work on the machine skews wall times."""
    return round(os.getloadavg()[0], 2)


QUIET_LOAD = 0.5


def quiet_note(before: float | None) -> str:
    """What the load before a run says about its times (a quiet machine: 1-minute load below 0.5)."""
    if before is None:
        return "the load was not recorded, so the times may be skewed by other work"
    if before < QUIET_LOAD:
        return f"below {QUIET_LOAD} when it started: a quiet machine"
    return (f"{QUIET_LOAD} or more when it started: not a quiet machine (other work, or the previous "
            "benchmark's processes winding down), so wall times and rates are noisy")


def wait_for_quiet(max_seconds: float = 240.0) -> float:
    """Wait (up to `max_seconds`) until the 1-minute load is below the quiet mark, so that the
    previous step's processes do not skew the next timing; returns the load reached."""
    t0 = time.perf_counter()
    while (load := load_1m()) >= QUIET_LOAD and time.perf_counter() - t0 < max_seconds:
        time.sleep(5)
    return load


# ---- running and timing -----------------------------------------------------------------------
@contextmanager
def stderr_to(path: Path) -> Iterator[None]:
    """Send fd 2 (Beam's and datatrove's logs, child processes included) to a file."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "a") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def timed_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """Call `fn(*args, **kwargs)` once: (wall seconds, its result)."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def timed_command(cmd: Sequence[str], log: Path | None = None,
                  env: dict[str, str] | None = None) -> tuple[float, str]:
    """Run `cmd` in the project root: (wall seconds, its stdout). With `log`, stdout and stderr go
    to that file instead (and "" is returned). Exits with a message when the command fails."""
    if log is None:
        seconds, done = timed_call(subprocess.run, cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
        return seconds, done.stdout
    with open(log, "w", encoding="utf-8") as f:
        seconds, code = timed_call(subprocess.call, cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    if code:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed (exit {code}); see {log}")
    return seconds, ""


# ---- results and README -----------------------------------------------------------------------
def read_results(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def write_results(path: Path, results: dict[str, Any], ensure_ascii: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, ensure_ascii=ensure_ascii) + "\n", encoding="utf-8")


def parser(description: str) -> argparse.ArgumentParser:
    """A benchmark's command line: `--readme` rewrites its README section from its results JSON
    without running anything."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--readme", action="store_true",
                   help="only rewrite the README section from the results JSON (runs nothing)")
    return p


def readme_only(wanted: bool, title: str, results: Path, section: Callable[[dict[str, Any]], str]) -> bool:
    """When `wanted` (`--readme`), rewrite the `title` section of the README from the results JSON at
    `results` with `section(results)`. Says whether it did."""
    if wanted:
        update_readme(title, section(read_results(results)))
    return wanted


def fresh_log(path: Path) -> Path:
    """An empty log file at `path` (its folder made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    return path


def fmt(v: Any, digits: int = 0, *, none: str = "", group: str = ",") -> str:
    """One value for a README table: None -> `none`; a bool -> yes / **no**; an int with thousands
    separators; a float with `digits` decimals, grouped by `group` ("" for none); anything else as str."""
    if v is None:
        return none
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:{group}.{digits}f}"
    return str(v)


def md_row(*cells: Any) -> str:
    """A Markdown table row."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def preset_only(preset: str) -> dict[str, Any]:
    """The `lm.distill` preset's values that a run's report does not store (its settings keep the
    options only), read when a benchmark records the run, just after it ran."""
    from lm.distill.config import PRESETS
    d = PRESETS[preset].defaults()
    return {k: getattr(d, k) for k in ("batch", "eval_every", "patience", "own_teacher_samples")}


# `lm.ngram`'s smoothing methods, as results record them (`method` of the n-gram anchor)
NGRAM_METHODS = {"modified-kneser-ney": "interpolated modified Kneser-Ney", "witten-bell": "interpolated Witten-Bell"}


def ngram_method(ngram: dict[str, Any] | None) -> str:
    """The n-gram anchor's method as its results recorded it; results written before `lm.ngram`
    recorded a method (it was then Witten-Bell) say so."""
    method = (ngram or {}).get("method")
    if not method:
        return "Witten-Bell (recorded before the change)"
    return NGRAM_METHODS.get(method, method)


def render(template: str, **values: Any) -> str:
    """bench/templates/<template>.md with its {placeholders} filled by str.format (fields may
    index into the values: {m[cpu_count]}, {load[0]})."""
    return (TEMPLATES / f"{template}.md").read_text(encoding="utf-8").format(**values)


def update_readme(title: str, section: str) -> None:
    """Replace the `title` section of bench/README.md with `section` (appended when absent)."""
    text = README.read_text(encoding="utf-8") if README.exists() else "# Benchmarks\n"
    start = text.find(title)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(title))
        rest = text[end + 1:] if end >= 0 else ""
        text = text[:start] + section.rstrip("\n") + "\n" + ("\n" + rest if rest else "")
    README.write_text(text, encoding="utf-8")


def publish(results_path: Path, title: str, results: dict[str, Any],
            section: Callable[[dict[str, Any]], str]) -> None:
    """Write the results JSON and rewrite the README section made from it."""
    write_results(results_path, results)
    update_readme(title, section(results))
