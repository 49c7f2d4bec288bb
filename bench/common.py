"""What every benchmark shares: the machine description and the README section writer."""
from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "bench" / "README.md"


def machine(*packages: str) -> dict[str, Any]:
    """CPU, Python and the versions of `packages`, for the results JSON."""
    cpu = ""
    if Path("/proc/cpuinfo").exists():
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    return {"cpu_count": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "platform": platform.platform(), **{p: importlib.metadata.version(p) for p in packages}}


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
