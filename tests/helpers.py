"""What the tests share, in one place: plain functions and constants (the fixtures are in conftest.py).

* The real text in ../shared/data (`SCARCE_LM_SHARED_DATA` elsewhere): `gl_lines`, `GL`, `SHAKESPEARE`.
* Corpus specs and snapshots: `write_spec`, `sources_toml`, `gl_split_spec`, `small_spec` (with
  the `AUGMENT` steps), `noise_step`, `augmented_gl`, `read_split`, `read_rejected`, `tree_digest`,
  `check_accounting`.
* Local HTTP servers: `serving` with a `QuietHandler`.
* Killing a real command at a point seen on disk: `kill_when`, `holds`.
* The small corpora and the tiny trained run of the lm tests, built once per test session (cached
  under pytest's base temp folder), and checks on them: `corpora`, `tiny_run`, `copy_with_empty`,
  `assert_generated`:

  - `gl-small`: the first 600 train, 150 dev and 150 test lines of gl-ctg, split by source; dev
    and test lines carry a made-up word (SENTINEL) that must never reach a tokenizer.
  - `shakespeare-small`: the first ~120k characters of Tiny Shakespeare as paragraphs, tail split
    like the full spec (test = the last 10% of the characters).
* Numpy references of the distillation losses: `np_log_softmax`, `np_distill_kl`.

Test modules import from here (`from tests.helpers import ...`), never from one another
(tests/test_tests.py checks it).
"""
from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import pyarrow.parquet as pq
import pytest

if TYPE_CHECKING:
    from lm.loader import LanguageModel

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SCARCE_LM_SHARED_DATA", ROOT.parent / "shared" / "data"))
GL = SHARED / "gl-ctg"
SHAKESPEARE = SHARED / "tinyshakespeare" / "input.txt"
SPLITS = ("train", "dev", "test")

# ---- real text, specs and snapshots ------------------------------------------------------------


def gl_lines(split: str, n: int | None = None) -> list[str]:
    lines = [line for line in (GL / f"{split}.txt").read_text(encoding="utf-8").split("\n") if line.strip()]
    return lines if n is None else lines[:n]


def write_spec(folder: Path, body: str, name: str = "corpus") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(f'name = "{name}"\nlanguage = "gl"\n' + body, encoding="utf-8")
    return path


def sources_toml(*tables: dict[str, str]) -> str:
    """One `[[sources]]` table a dict, its values written as TOML strings, in the dict's order."""
    return "".join("[[sources]]\n" + "".join(f'{key} = "{value}"\n' for key, value in table.items())
                   for table in tables)


def gl_split_spec(folder: Path, counts: tuple[int, int, int], extra: str, name: str) -> Path:
    """A spec over the first `counts` lines of gl-ctg's train, dev and test, split by source,
    with `extra` (tables such as [augment]) appended."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in zip(SPLITS, counts):
        (folder / f"{split}.txt").write_text("\n".join(gl_lines(split, n)) + "\n", encoding="utf-8")
    sources = sources_toml(*({"path": f"{s}.txt", "format": "lines", "split": s} for s in SPLITS))
    return write_spec(folder, sources + '[split]\nmethod = "source"\n' + extra, name=name)


def augmented_gl(folder: Path, counts: tuple[int, int, int], augment: str, name: str) -> Path:
    """A snapshot of `gl_split_spec` (language identification and near dedup off) augmented by
    the `augment` table; its folder (OUT/NAME)."""
    from pipelines.augmentation import augment_snapshot
    extra = '[langid]\naction = "off"\n[dedup]\nnear = "off"\n' + augment
    snapshot = _build(gl_split_spec(folder, counts, extra, name), folder / "out")
    augment_snapshot(str(snapshot))
    return snapshot


def noise_step(seed: int) -> str:
    """An [augment] table: one noise variant of each line (swapped and mistyped characters)."""
    return f"""
[augment]
seed = {seed}
[[augment.steps]]
augmenter = "noise"
ops = ["swap", "typo"]
rate = 0.1
variants = 1
"""

# Two augmentation steps, MyThes synonyms then noise, that more than one test's [augment] table runs.
SYNONYMS_AND_NOISE = """[[augment.steps]]
augmenter = "synonyms"
backend = "mythes"
rate = 0.2
[[augment.steps]]
augmenter = "noise"
ops = ["swap", "typo", "strip_diacritics"]
rate = 0.1
variants = 2
"""

# The [augment] table of `small_spec`: Apertium back-translation through es and pt, then the two above.
AUGMENT = """
[augment]
seed = 13
batch_size = 40
[[augment.steps]]
augmenter = "backtranslate"
backend = "apertium"
pivot = ["es", "pt"]
""" + SYNONYMS_AND_NOISE


def small_spec(folder: Path, augment: str = AUGMENT) -> Path:
    """`glsmall`: 120, 40 and 40 lines of gl-ctg, split by source, with `augment` appended."""
    return gl_split_spec(folder, (120, 40, 40), augment, "glsmall")


def read_split(version_dir: Path, split: str) -> list[dict[str, Any]]:
    return pq.read_table(version_dir / split).to_pylist()


def read_rejected(version_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for p in sorted((version_dir / "rejected").glob("*.jsonl")):
        rows += [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines()]
    return rows


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def check_accounting(stats: dict[str, Any], version_dir: Path) -> None:
    """input = kept + rejected + duplicates, at the top and per source; kept = rows of all splits."""
    assert stats["input"] == stats["kept"] + stats["rejected"] + stats["duplicates"]
    for name, s in stats["sources"].items():
        assert s["input"] == s["kept"] + s["rejected"] + s["duplicates"], name
    rows = sum(len(read_split(version_dir, s)) for s in SPLITS)
    assert rows == stats["kept"] == sum(stats["splits"].values())
    assert len(read_rejected(version_dir)) == stats["rejected"] + stats["duplicates"]


# ---- local HTTP servers ------------------------------------------------------------------------


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """A request handler for the tests' local servers: no request log on stderr."""

    def log_message(self, *args: Any) -> None:
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    """A client that gave up (the timeout tests') is expected: its broken pipe is not printed,
    where it would land in a later test's captured stderr."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """A loopback HTTP server (plain http is allowed only there) answering with `handler`; yields
    its base URL and shuts it down afterwards."""
    server = QuietServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


# ---- the lm tests' small corpora and tiny run --------------------------------------------------

SENTINEL = "qzxjvwk"
TINY = ["--preset", "tiny", "--batch", "8", "--quiet"]


def _build(spec: Path, out: Path) -> Path:
    from pipelines.build import build
    from pipelines.spec import load_spec
    result = build(load_spec(spec), str(out))
    return Path(result["path"]).parent


def corpora(factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"gl": OUT/gl-small, "shakespeare": OUT/shakespeare-small}, built once per session."""
    base = factory.getbasetemp() / "lm-corpora"
    done = base / "done"
    out = base / "out"
    if not done.exists():
        shutil.rmtree(base, ignore_errors=True)
        src = base / "src"
        src.mkdir(parents=True)
        (src / "train.txt").write_text("\n".join(gl_lines("train", 600)) + "\n", encoding="utf-8")
        for split in ("dev", "test"):
            lines = [f"{line} {SENTINEL} {SENTINEL}." if i % 3 == 0 else line
                     for i, line in enumerate(gl_lines(split, 150))]
            (src / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        body = "".join(f'[[sources]]\nname = "{s}"\npath = "{s}.txt"\nformat = "lines"\nsplit = "{s}"\n\n'
                       for s in SPLITS)
        body += '[split]\nmethod = "source"\n\n[langid]\naction = "off"\n\n[dedup]\nnear = "off"\n'
        _build(write_spec(src, body, name="gl-small"), out)
        raw = SHAKESPEARE.read_text(encoding="utf-8")
        (src / "shakespeare.txt").write_text(raw[:raw.index("\n\n", 120_000)] + "\n", encoding="utf-8")
        body = ('[[sources]]\nname = "input"\npath = "shakespeare.txt"\nformat = "paragraphs"\nsegment = false\n\n'
                '[split]\nmethod = "tail"\ndev = 0.05\ntest = 0.1\n\n[langid]\naction = "off"\n\n'
                '[filters]\nenabled = false\n\n[dedup]\nexact = false\nnear = "off"\n')
        _build(write_spec(src, body, name="shakespeare-small"), out)
        done.touch()
    return {"gl": out / "gl-small", "shakespeare": out / "shakespeare-small", "src": base / "src"}


def tiny_run(factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained 60 steps on gl-small (decay over 60 steps), built once per session."""
    run = factory.getbasetemp() / "lm-run" / "gl-tiny"
    if not (run / "run.json").exists() or not (run / "best").is_dir():
        from lm.train import main
        shutil.rmtree(run, ignore_errors=True)
        assert main(["--corpus", str(corpora(factory)["gl"]), "--steps", "60", "--out", str(run),
                     "--eval-every", "20", *TINY]) == 0
    return run


def copy_with_empty(snapshot_dir: Path, split: str, dest: Path) -> Path:
    """A copy of a snapshot under `dest` whose `split` has one shard with no rows, published so
    (its manifest entry says 0 rows and the new sha256); returns the copy's corpus folder."""
    version = (snapshot_dir / "LATEST").read_text().strip()
    target = dest / snapshot_dir.name / version
    shutil.copytree(snapshot_dir / version, target)
    (dest / snapshot_dir.name / "LATEST").write_text(version + "\n")
    shard = next((target / split).glob("*.parquet"))
    pq.write_table(pq.read_table(shard).schema.empty_table(), shard)
    # Published that way: the manifest lists the empty shard (a changed shard alone is refused).
    manifest = json.loads((target / "manifest.json").read_text())
    for s in manifest["shards"]:
        if s["path"] == f"{split}/{shard.name}":
            s.update(rows=0, sha256=hashlib.sha256(shard.read_bytes()).hexdigest())
    (target / "manifest.json").write_text(json.dumps(manifest))
    return dest / snapshot_dir.name


def assert_generated(model: LanguageModel, prompt: str, n: int, ids: list[int], **sampling: Any) -> None:
    """`ids` is a whole continuation of `prompt`: `n` new tokens, or fewer only where the next token
    drawn is the end of sequence (the same draws without stopping tell), and at least one."""
    from lm.generate import generate_ids
    free = generate_ids(model, prompt, n, stop_at_eos=False, **sampling)
    eos = model.tokenizer.eos_id
    assert len(free) == n and ids == free[:len(ids)] and eos not in ids
    assert len(ids) == n or free[len(ids)] == eos, (len(ids), n)
    assert len(ids) > 0


# ---- numpy references of the distillation losses -----------------------------------------------


def np_log_softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_distill_kl(teacher: np.ndarray, student: np.ndarray, mask: np.ndarray, t: float, kind: str,
                  k: int | None = None, tail: str = "bucket") -> float:
    """Plain numpy reference of the KL term (module doc of `lm.losses`), masked mean over tokens:
    KL(teacher_T || student_T) (`reverse`: swapped), on the full distributions (`k` None) or on
    the teacher's top k tokens, renormalised (`renorm`) or with the rest of the mass as one more
    outcome (`bucket`; an empty bucket, K = vocabulary, weighs nothing)."""
    lt, ls = np_log_softmax(np.asarray(teacher) / t), np_log_softmax(np.asarray(student) / t)
    if k is not None:
        top = np.argsort(-lt, axis=-1, kind="stable")[..., :k]
        tk, sk = np.take_along_axis(lt, top, -1), np.take_along_axis(ls, top, -1)
        if tail == "renorm":
            lt, ls = np_log_softmax(tk), np_log_softmax(sk)
        else:
            inside = np.zeros(lt.shape, bool)
            np.put_along_axis(inside, top, True, -1)
            rest_t = 1.0 - np.exp(tk).sum(-1, keepdims=True)
            rest_s = np.where(inside, 0.0, np.exp(ls)).sum(-1, keepdims=True)
            floor = 1e-12
            lt = np.concatenate([tk, np.log(np.maximum(rest_t, floor))], -1)
            ls = np.concatenate([sk, np.log(np.maximum(rest_s, floor))], -1)
    p, q = (lt, ls) if kind == "forward" else (ls, lt)
    per_token = (np.exp(p) * (p - q)).sum(-1)
    m = np.asarray(mask, np.float64)
    return float((per_token * m).sum() / m.sum())


def err_line(capsys: pytest.CaptureFixture) -> str:
    """The one line a command wrote on stderr (asserting it wrote exactly one)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def kill_when(cmd: list[str], out: Path, ready: Callable[[Path], bool], log: Path,
              sig: signal.Signals = signal.SIGKILL, timeout: float = 120) -> None:
    """Start `cmd`, poll `ready(out)` every millisecond and send `sig` the moment it holds;
    fails when the command ends first."""
    with open(log, "ab") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while not holds(ready, out):
                if proc.poll() is not None:
                    pytest.fail(f"the command ended (exit {proc.returncode}) before the kill point: "
                                + log.read_text(errors="replace")[-2000:])
                if time.monotonic() > deadline:
                    pytest.fail("the kill point was never reached")
                time.sleep(0.001)
            proc.send_signal(sig)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == -sig, f"exit {proc.returncode}, not killed by {sig.name}"


def holds(ready: Callable[[Path], bool], out: Path) -> bool:
    try:
        return ready(out)
    except (OSError, ValueError):  # a file written or renamed while read
        return False
