"""Hostile inputs (issue 14): NUL bytes, UTF-16, empty results, stale augmented staging, bad
command lines, a LATEST naming nothing, names with a trailing newline, https downgrades.

Each case is one line on stderr with its documented exit code, or a rejected record with a
reason; nothing is lost silently and no traceback reaches the user."""
from __future__ import annotations

import os
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from pipelines import readers
from pipelines.augmentation import augment_snapshot
from pipelines.build import build, main as build_main
from pipelines.errors import SourceError, run_cli
from pipelines.fetch import resolve_sources
from pipelines.refresh import main as refresh_main
from pipelines.spec import load_spec

from tests.helpers import QuietHandler, gl_lines, read_rejected, serving, write_spec

NOISE = '[augment]\nseed = 3\n[[augment.steps]]\naugmenter = "noise"\nops = ["typo"]\nrate = 0.1\n'


def read_units(spec_path: Path) -> list[tuple[str, dict]]:
    """The reader's events for the spec's only source, without Beam."""
    spec = load_spec(spec_path)
    (resolved,) = resolve_sources(spec)
    return list(readers.read_source(readers.source_info(resolved, spec)))


def good_source(folder: Path, n: int = 60) -> str:
    (folder / "good.txt").write_text("\n".join(gl_lines("train", n)) + "\n", encoding="utf-8")
    return '[[sources]]\npath = "good.txt"\nformat = "lines"\n'


def binary_source(folder: Path) -> str:
    """A source of binary bytes: the build rejects it whole."""
    (folder / "blob.bin").write_bytes(bytes(range(256)) * 64)
    return '[[sources]]\npath = "blob.bin"\nformat = "lines"\n'


# 4. NUL bytes: the line goes, with a reason; the rest of the file stays.

def test_nul_bytes_reject_their_lines_only(tmp_path: Path) -> None:
    lines = [line.encode() for line in gl_lines("train", 120)]
    nul_at = [0, 7, 100]  # one in the first 8 KiB, one far past it
    assert sum(len(x) + 1 for x in lines[:100]) > 8192
    for i in nul_at:
        lines[i] = lines[i][:12] + b"\0" + lines[i][12:]
    (tmp_path / "nul.txt").write_bytes(b"\n".join(lines) + b"\n")
    spec = write_spec(tmp_path, '[[sources]]\npath = "nul.txt"\nformat = "lines"\n')
    events = read_units(spec)
    rejected = [e for kind, e in events if kind == "rejected"]
    assert [r["reason"] for r in rejected] == ["nul_byte"] * 3
    assert [r["offset"] for r in rejected] == [sum(len(x.decode()) + 1 for x in lines[:i]) for i in nul_at]  # chars
    assert len([e for kind, e in events if kind == "ok"]) == 117
    assert not any("\0" in e["text"] for kind, e in events if kind == "ok")  # nothing stripped silently


def test_binary_source_is_rejected_whole_and_said_on_stderr(tmp_path: Path, capsys) -> None:
    spec = write_spec(tmp_path, good_source(tmp_path) + binary_source(tmp_path))
    assert run_cli(build_main, [str(spec), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    (line,) = [x for x in err if "blob" in x]
    assert "binary" in line and "blob.bin" in line and "rejected whole" in line


# 5. UTF-16: read when declared; a hint when not.

def utf16_file(folder: Path, codec: str) -> list[str]:
    lines = gl_lines("dev", 30)
    (folder / "wide.txt").write_bytes(("\n".join(lines) + "\n").encode(codec))
    return lines


def test_declared_utf16_is_read(tmp_path: Path) -> None:
    lines = utf16_file(tmp_path, "utf-16")
    spec = write_spec(tmp_path, '[[sources]]\npath = "wide.txt"\nformat = "lines"\nencoding = "utf-16"\n')
    events = read_units(spec)
    assert [e["text"] for kind, e in events if kind == "ok"] == lines
    assert not [e for kind, e in events if kind == "rejected"]


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be"])  # with BOM, and without either way
def test_undeclared_utf16_gets_a_hint(tmp_path: Path, codec: str) -> None:
    utf16_file(tmp_path, codec)
    spec = write_spec(tmp_path, '[[sources]]\npath = "wide.txt"\nformat = "lines"\n')
    (event,) = read_units(spec)
    assert event[0] == "rejected" and event[1]["reason"] == "undeclared_utf16"
    assert 'looks like UTF-16: set encoding = "utf-16" in source wide' in event[1]["detail"]


def test_undeclared_utf16_hint_on_stderr(tmp_path: Path, capsys) -> None:
    utf16_file(tmp_path, "utf-16")
    spec = write_spec(tmp_path, good_source(tmp_path) + '[[sources]]\npath = "wide.txt"\nformat = "lines"\n')
    assert run_cli(build_main, [str(spec), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert 'looks like UTF-16: set encoding = "utf-16" in source wide' in err
    assert len([x for x in err.splitlines() if "wide" in x]) == 1



def test_declared_latin1_is_read_and_undeclared_is_rejected_per_line(tmp_path: Path) -> None:
    """`encoding = "latin-1"` decodes a Latin-1 file exactly; read as UTF-8 (the default) its
    accented lines are rejected as bad_utf8, the plain-ASCII ones kept."""
    lines = [line for line in gl_lines("dev", 80) if all(ord(c) < 256 for c in line)][:40]
    accented = [line for line in lines if any(ord(c) > 127 for c in line)]
    assert len(accented) >= 20
    (tmp_path / "old.txt").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    spec = write_spec(tmp_path, '[[sources]]\npath = "old.txt"\nformat = "lines"\nencoding = "latin-1"\n')
    events = read_units(spec)
    assert [e["text"] for kind, e in events if kind == "ok"] == lines
    spec = write_spec(tmp_path, '[[sources]]\npath = "old.txt"\nformat = "lines"\n', name="undeclared")
    events = read_units(spec)
    assert [e["reason"] for kind, e in events if kind == "rejected"] == ["bad_utf8"] * len(accented)
    assert [e["text"] for kind, e in events if kind == "ok"] == [x for x in lines if x not in accented]

# 6. Empty results: exit 1 unless --allow-empty.

def test_build_keeping_nothing_exits_1_unless_allowed(tmp_path: Path, capsys) -> None:
    spec = write_spec(tmp_path, binary_source(tmp_path))
    out = tmp_path / "out"
    assert run_cli(build_main, [str(spec), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "no records kept" in err and "--allow-empty" in err and "Traceback" not in err
    version = (out / "corpus" / "LATEST").read_text().strip()  # published, so it can be inspected
    assert [r["reason"] for r in read_rejected(out / "corpus" / version)] == ["binary"]
    assert run_cli(build_main, [str(spec), "--out", str(out), "--allow-empty"]) == 0
    assert "no records kept" in capsys.readouterr().err  # still said, but not a failure


def test_build_with_empty_test_split_exits_1(tmp_path: Path, capsys) -> None:
    (tmp_path / "tr.txt").write_text("\n".join(gl_lines("train", 30)) + "\n", encoding="utf-8")
    (tmp_path / "dv.txt").write_text("\n".join(gl_lines("dev", 10)) + "\n", encoding="utf-8")
    body = ('[[sources]]\npath = "tr.txt"\nformat = "lines"\nsplit = "train"\n'
            '[[sources]]\npath = "dv.txt"\nformat = "lines"\nsplit = "dev"\n[split]\nmethod = "source"\n')
    spec = write_spec(tmp_path, body)
    assert run_cli(build_main, [str(spec), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert [x for x in err if "split test is empty" in x] and not [x for x in err if "split dev" in x]
    assert run_cli(build_main, [str(spec), "--out", str(tmp_path / "out"), "--allow-empty"]) == 0


def test_refresh_keeping_nothing_publishes_nothing_unless_allowed(tmp_path: Path, capsys) -> None:
    spec = write_spec(tmp_path, binary_source(tmp_path))
    out = tmp_path / "out"
    assert run_cli(refresh_main, [str(spec), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "no records kept" in err and "--allow-empty" in err
    assert not (out / "corpus" / "LATEST").exists()
    assert run_cli(refresh_main, [str(spec), "--out", str(out), "--allow-empty"]) == 0
    assert (out / "corpus" / "LATEST").exists()


# 7. A killed augment's staging folder goes on the next run.

def test_stale_augmented_staging_is_removed(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, good_source(tmp_path) + NOISE)
    result = build(load_spec(spec), str(tmp_path / "out"))
    vdir = Path(result["path"])
    stale = vdir / ".augmented-staging-deadbeef"
    (stale / "train").mkdir(parents=True)
    (stale / "train" / "part.parquet").write_bytes(b"half")
    build(load_spec(spec), str(tmp_path / "out"))  # same version: nothing new published
    assert not stale.exists()
    stale.mkdir()
    augment_snapshot(str(vdir.parent))
    assert not stale.exists() and (vdir / "augmented" / "stats.json").exists()


# 10. SPEC given as a folder.

def test_spec_folder_is_a_usage_error(tmp_path: Path, capsys) -> None:
    assert run_cli(build_main, [str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(tmp_path) in err and "folder" in err


# 11. LATEST naming a version that is not there.

def test_refresh_repairs_latest_naming_a_missing_version(tmp_path: Path, capsys) -> None:
    spec = write_spec(tmp_path, good_source(tmp_path, 80))
    out = tmp_path / "out"
    assert run_cli(refresh_main, [str(spec), "--out", str(out)]) == 0
    corpus = out / "corpus"
    version = (corpus / "LATEST").read_text().strip()
    (corpus / "LATEST").write_text("0123456789ab\n")  # names nothing
    capsys.readouterr()
    assert run_cli(refresh_main, [str(spec), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "0123456789ab" in err and "Traceback" not in err
    assert (corpus / "LATEST").read_text().strip() == version
    # The version LATEST names was deleted: not "unchanged", rebuilt.
    import shutil
    shutil.rmtree(corpus / version)
    assert run_cli(refresh_main, [str(spec), "--out", str(out)]) == 0
    assert (corpus / version / "manifest.json").exists()


# 12. --out a file, --out read-only, --then a missing command.

def test_out_naming_a_file_is_a_usage_error(tmp_path: Path, capsys) -> None:
    spec = write_spec(tmp_path, good_source(tmp_path, 20))
    (tmp_path / "afile").write_text("x")
    for main in (build_main, refresh_main):
        assert run_cli(main, [str(spec), "--out", str(tmp_path / "afile")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "afile" in err and "not a folder" in err


def test_read_only_out_is_one_line_exit_1(tmp_path: Path, capsys, monkeypatch) -> None:
    spec = write_spec(tmp_path, good_source(tmp_path, 20))
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: let the file system say no, as a read-only mount does
        real_mkdir, real_open = Path.mkdir, os.open

        def mkdir(self: Path, *a, **k) -> None:
            if str(self).startswith(str(locked) + "/"):
                raise PermissionError(13, "Permission denied", str(self))
            real_mkdir(self, *a, **k)

        def os_open(path, *a, **k):
            if str(path).startswith(str(locked) + "/"):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *a, **k)
        monkeypatch.setattr(Path, "mkdir", mkdir)
        monkeypatch.setattr(os, "open", os_open)
        monkeypatch.setattr(os, "access", lambda p, m, **k: not str(p).startswith(str(locked)))
    try:
        for main in (build_main, refresh_main):
            assert run_cli(main, [str(spec), "--out", str(locked / "sub")]) == 1
            err = capsys.readouterr().err.strip()
            assert err.count("\n") == 0 and str(locked) in err and "cannot write" in err
    finally:
        locked.chmod(0o755)


def test_then_with_a_missing_command_fails_before_the_run(tmp_path: Path, capsys) -> None:
    spec = write_spec(tmp_path, good_source(tmp_path, 20))
    out = tmp_path / "out"
    assert run_cli(refresh_main, [str(spec), "--out", str(out), "--then", "no-such-command-xyz --flag"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--then" in err and "no-such-command-xyz" in err
    assert not out.exists()  # checked before anything ran
    assert run_cli(refresh_main, [str(spec), "--out", str(out), "--then", "echo 'unbalanced"]) == 2
    assert "--then" in capsys.readouterr().err


# 14. Names and language codes with a trailing newline.

A = '[[sources]]\npath = "a.txt"\nformat = "lines"\n'


@pytest.mark.parametrize("body, key", [
    ('name = "nl\\n"\nlanguage = "nl"\n' + A, "name"),
    ('name = "nl"\nlanguage = "nl\\n"\n' + A, "language"),
    ('name = "nl"\nlanguage = "nl"\n' + A + '[langid]\nconfusable = ["af\\n"]\n', "langid.confusable"),
    ('name = "nl"\nlanguage = "nl"\n' + A + '[[sources]]\npath = "b.txt"\nformat = "lines"\nname = "b\\n"\n',
     "sources[1].name"),
])
def test_trailing_newline_in_names_is_a_spec_error(tmp_path: Path, capsys, body: str, key: str) -> None:
    spec = tmp_path / "nl.toml"
    spec.write_text(body, encoding="utf-8")
    assert run_cli(build_main, [str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{key}:" in err
    assert not (tmp_path / "out").exists()


# 15. A redirect never leaves https.

@pytest.fixture()
def redirecting_server() -> Iterator[str]:
    class Redirect(QuietHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", "http://example.invalid/plain.txt")
            self.end_headers()

    with serving(Redirect) as base:
        yield base


def test_redirect_policy_refuses_leaving_https() -> None:
    from pipelines.fetch import HttpsOnlyRedirects

    handler = HttpsOnlyRedirects()
    request = urllib.request.Request("https://example.org/a.txt")
    with pytest.raises(SourceError, match="https://example.org/a.txt.*http://example.org/b.txt"):
        handler.redirect_request(request, None, 302, "Found", {}, "http://example.org/b.txt")
    assert handler.redirect_request(request, None, 302, "Found", {}, "https://mirror.example.org/a.txt") is not None


def test_redirect_to_plain_http_is_refused(tmp_path: Path, redirecting_server: str, capsys) -> None:
    url = f"{redirecting_server}/raw.txt"
    spec = write_spec(tmp_path, f'[[sources]]\nname = "r"\nurl = "{url}"\nformat = "lines"\n')
    assert run_cli(build_main, [str(spec), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "redirect" in err and url in err and "http://example.invalid/plain.txt" in err
    assert not (tmp_path / "out").exists()

