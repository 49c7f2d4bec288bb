"""Bring every source of a spec to a local file before the pipeline runs.

URL sources are served from a mirror folder when one is given (pinned files matched by sha256
anywhere under it, unpinned ones by literal file name, longest matching path suffix first), else from a content-addressed cache, else
downloaded with a timeout and a size cap and verified against their pinned sha256.

A download has a timeout per read (TIMEOUT_S) and a total deadline (DOWNLOAD_DEADLINE_S): one
still unfinished that long after it started (a server sending a byte now and then) is abandoned
with a one-line SourceError naming the URL. It is written to `.part-PID@HOST.*` in the cache and
renamed into place only when whole; on any failure the part file is removed, and one left by a
killed process is removed by the next run (`clean_stale_parts`): at once when its process on this
machine is gone, else once it is older than any download may last.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from tqdm import tqdm

from common.files import sha256_file, user_cache_dir, write_text_atomic
from pipelines.errors import SourceError
from pipelines.spec import CorpusSpec, Source, is_loopback_http, resolve_path

MIRROR_ENV = "SCARCE_LM_MIRROR"
TIMEOUT_S = 60
DOWNLOAD_DEADLINE_S = 2 * 3600  # the most one download may take, start to end (2 GiB at 300 kB/s)
_CHUNK = 1 << 20
PART_PREFIX = ".part-"
_HOST = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())


@dataclass(frozen=True)
class ResolvedSource:
    """A source with a local location and its fingerprint (sha256 of the bytes read)."""

    source: Source
    local: str
    sha256: str
    origin: str  # "path", "mirror", "cache", "download" or "hf"


def default_cache_dir() -> Path:
    """The content-addressed download cache, inside the project's cache folder."""
    return user_cache_dir() / "downloads"


def sha256_tree(folder: Path) -> str:
    """Fingerprint of a folder (a local `datasets` folder): relative names and file contents."""
    h = hashlib.sha256()
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(folder)).encode() + b"\0" + sha256_file(p).encode())
    return h.hexdigest()


class Mirror:
    """A local folder standing in for the network; its files are indexed by sha256 once."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise SourceError(f"mirror {self.root}: not a folder")
        self._by_sha: dict[str, Path] | None = None
        self._all: list[Path] | None = None

    def _files(self) -> list[Path]:
        """Plain files only (no folders, no links), sorted so every lookup is deterministic."""
        if self._all is None:
            self._all = sorted(p for p in self.root.rglob("*") if p.is_file() and not p.is_symlink())
        return self._all

    def find(self, url: str, sha256: str | None) -> Path | None:
        """A pinned URL by its sha256 only (a file of that name with another hash is a checksum
        error); an unpinned one by its file name, taken literally (never a glob pattern), the
        file whose path shares the longest suffix with the URL's path winning."""
        if sha256:
            if self._by_sha is None:
                self._by_sha = {}
                for p in self._files():
                    self._by_sha.setdefault(sha256_file(p), p)
            found = self._by_sha.get(sha256)
            same_name = None if found else self._by_name(url)
            if same_name is not None:
                raise SourceError(f"checksum mismatch for {url}: expected sha256 {sha256}, mirror file "
                                  f"{same_name} has {sha256_file(same_name)}")
            return found
        return self._by_name(url)

    def _by_name(self, url: str) -> Path | None:
        path = urlparse(url).path
        if not path or path.endswith("/"):  # a folder's address names no file
            return None
        parts = PurePosixPath(path).parts
        best, best_len = None, 0
        for p in self._files():
            rel = p.relative_to(self.root).parts
            if rel[-1] != parts[-1]:
                continue
            n = 1
            while n < min(len(rel), len(parts)) and rel[-1 - n] == parts[-1 - n]:
                n += 1
            if n > best_len:  # ties keep the first in sorted order
                best, best_len = p, n
        return best


class UnsafeRedirect(SourceError):
    """A redirect that would leave https: refused, so the https-only rule cannot be bypassed."""


class HttpsOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to https, or from plain loopback http (tests, a local daemon) to
    loopback http; anything else raises UnsafeRedirect naming both URLs."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[override]
        old = req.full_url
        if not (newurl.startswith("https://") or (is_loopback_http(old) and is_loopback_http(newurl))):
            raise UnsafeRedirect(f"refusing the redirect from {old} to {newurl}: it leaves https")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(HttpsOnlyRedirects())


class NotModified(Exception):
    """The server answered 304 to a conditional request."""


def download(url: str, dest_dir: Path, max_bytes: int, expected_sha256: str | None, label: str,
             validators: dict[str, str] | None = None) -> tuple[Path, str, dict[str, str]]:
    """Fetch `url` into the content cache; returns (path, sha256, the response's ETag and
    Last-Modified). With `validators` the request is conditional and a 304 raises NotModified.
    Other failures (the deadline too) raise SourceError naming `label`; no part file stays."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    headers = {"User-Agent": "scarce-lm"}
    if validators and validators.get("etag"):
        headers["If-None-Match"] = validators["etag"]
    if validators and validators.get("last_modified"):
        headers["If-Modified-Since"] = validators["last_modified"]
    request = urllib.request.Request(url, headers=headers)
    deadline = time.monotonic() + DOWNLOAD_DEADLINE_S
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f"{PART_PREFIX}{os.getpid()}@{_HOST}.")
    try:
        with os.fdopen(fd, "wb") as out, \
                _OPENER.open(request, timeout=min(TIMEOUT_S, DOWNLOAD_DEADLINE_S)) as resp:
            seen = {k: v for k, v in (("etag", resp.headers.get("ETag")),
                                      ("last_modified", resp.headers.get("Last-Modified"))) if v}
            digest = _receive(resp, out, url, label, max_bytes, deadline)
        if expected_sha256 and digest != expected_sha256:
            raise SourceError(f"source {label}: checksum mismatch for {url}: expected sha256 {expected_sha256}, got {digest}")
        final = dest_dir / digest / (PurePosixPath(urlparse(url).path).name or "download")
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
        return final, digest, seen
    except UnsafeRedirect as exc:
        raise SourceError(f"source {label}: {exc}") from None
    except urllib.error.HTTPError as exc:
        if exc.code == 304:
            raise NotModified(url) from None
        raise SourceError(f"source {label}: cannot download {url} (HTTP {exc.code} {exc.reason})") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SourceError(
            f"source {label}: cannot download {url} ({reason}); offline? serve it from a folder with "
            f"--mirror DIR or {MIRROR_ENV}=DIR (e.g. --mirror ../shared/data)") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _receive(resp, out, url: str, label: str, max_bytes: int, deadline: float) -> str:
    """Copy a response's body to `out` under the size cap and the deadline; returns its sha256.
    Reads return what has arrived (read1), so a trickling server meets the deadline too."""
    total = int(resp.headers.get("Content-Length") or 0) or None
    if total and total > max_bytes:
        raise SourceError(f"source {label}: {url} is {total} bytes, over the cap of {max_bytes} (raise `max_bytes`)")
    h = hashlib.sha256()
    size = 0
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {label}", leave=False, disable=None) as bar:
        while True:
            if time.monotonic() > deadline:
                raise SourceError(
                    f"source {label}: download of {url} not finished after {DOWNLOAD_DEADLINE_S:g} s, the total "
                    f"deadline (pipelines.fetch.DOWNLOAD_DEADLINE_S); a slow server? fetch it yourself and serve "
                    f"it with --mirror DIR or {MIRROR_ENV}=DIR")
            chunk = resp.read1(_CHUNK)
            if not chunk:
                return h.hexdigest()
            size += len(chunk)
            if size > max_bytes:
                raise SourceError(f"source {label}: {url} exceeds the cap of {max_bytes} bytes (raise `max_bytes`)")
            h.update(chunk)
            out.write(chunk)
            bar.update(len(chunk))


def clean_stale_parts(cache_dir: Path) -> list[Path]:
    """Remove the part files of downloads that cannot be running any more: those of a process on
    this machine that is gone, and any untouched for longer than a download may last (another
    machine's, an older version's). Returns the paths removed."""
    removed: list[Path] = []
    if not cache_dir.is_dir():
        return removed
    too_old = time.time() - DOWNLOAD_DEADLINE_S - TIMEOUT_S
    for p in sorted(cache_dir.glob(f"{PART_PREFIX}*")):
        try:
            if _owner_gone(p.name) or p.stat().st_mtime < too_old:
                p.unlink()
                removed.append(p)
        except FileNotFoundError:  # its download finished or failed meanwhile
            continue
    return removed


def _owner_gone(name: str) -> bool:
    """Whether a part file's name (`.part-PID@HOST.XXXXXXXX`) names a process of this machine
    that no longer runs; False when it cannot tell."""
    m = re.fullmatch(rf"{re.escape(PART_PREFIX)}(\d+)@([A-Za-z0-9.-]+)\.[^.]+", name)
    if not m or m[2] != _HOST:
        return False
    try:
        os.kill(int(m[1]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError, ValueError):
        return False
    return False


class HttpState:
    """ETag and Last-Modified of unpinned URL sources, so a refresh asks "changed since?"."""

    def __init__(self, path: Path | None):
        self.path = path
        self.data: dict[str, dict[str, str]] = {}
        if path and path.exists():
            self.data = json.loads(path.read_text(encoding="utf-8"))
        self.changed = False

    def get(self, url: str) -> dict[str, str] | None:
        return self.data.get(url)

    def put(self, url: str, entry: dict[str, str]) -> None:
        if self.data.get(url) != entry:
            self.data[url], self.changed = entry, True

    def save(self) -> None:
        if self.path and self.changed:
            write_text_atomic(self.path, json.dumps(self.data, indent=2, sort_keys=True))
            self.changed = False


def _fetch_unpinned(url: str, source: Source, cache_dir: Path, state: HttpState | None) -> ResolvedSource:
    known = state.get(url) if state else None
    cached = Path(known["path"]) if known and known.get("path") else None
    validators = known if cached and cached.exists() else None
    try:
        path, digest, seen = download(url, cache_dir, source.max_bytes, None, source.name, validators)
    except NotModified:
        return ResolvedSource(source, str(cached), known["sha256"], "not-modified")
    if state is not None:
        state.put(url, {**seen, "sha256": digest, "path": str(path)})
    return ResolvedSource(source, str(path), digest, "download")


def resolve_source(spec: CorpusSpec, source: Source, mirror: Mirror | None, cache_dir: Path,
                   http_state: HttpState | None = None) -> ResolvedSource:
    if source.path:
        path = resolve_path(spec, source)
        if not path.exists():
            raise SourceError(f"source {source.name}: file not found: {path}")
        if path.is_dir():
            raise SourceError(f"source {source.name}: {path} is a folder, not a file")
        digest = sha256_file(path)
        if source.sha256 and digest != source.sha256:
            raise SourceError(f"source {source.name}: checksum mismatch for {path}: expected sha256 {source.sha256}, got {digest}")
        return ResolvedSource(source, str(path), digest, "path")
    if source.hf:
        folder = Path(source.hf).expanduser()
        if not folder.is_absolute() and (spec.base_dir / folder).exists():
            folder = spec.base_dir / folder
        if folder.exists():
            return ResolvedSource(source, str(folder), sha256_tree(folder), "hf")
        # A hub id: `datasets` fetches and caches it; its fingerprint is the id and config.
        digest = hashlib.sha256(f"{source.hf}\0{source.config}\0{source.hf_split}".encode()).hexdigest()
        return ResolvedSource(source, source.hf, digest, "hf")
    url = source.url or ""
    if mirror is not None:
        try:
            found = mirror.find(url, source.sha256)
        except SourceError as exc:
            raise SourceError(f"source {source.name}: {exc}") from None
        if found is None:
            what = f"sha256 {source.sha256}" if source.sha256 else f"a file named {PurePosixPath(urlparse(url).path).name!r}"
            raise SourceError(f"source {source.name}: mirror {mirror.root} has no file with {what} (for {url})")
        return ResolvedSource(source, str(found), source.sha256 or sha256_file(found), "mirror")
    if source.sha256:
        cached = cache_dir / source.sha256
        hits = sorted(cached.glob("*")) if cached.is_dir() else []
        if hits and sha256_file(hits[0]) == source.sha256:
            return ResolvedSource(source, str(hits[0]), source.sha256, "cache")
    if not source.sha256:
        return _fetch_unpinned(url, source, cache_dir, http_state)
    path, digest, _ = download(url, cache_dir, source.max_bytes, source.sha256, source.name)
    return ResolvedSource(source, str(path), digest, "download")


def resolve_sources(spec: CorpusSpec, mirror: str | None = None, cache_dir: Path | None = None,
                    http_state: HttpState | None = None) -> list[ResolvedSource]:
    """Resolve every source of `spec`; `mirror` falls back to the SCARCE_LM_MIRROR variable.
    With `http_state`, unpinned URL sources are fetched with conditional requests."""
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    m = Mirror(mirror) if mirror else None
    cache = cache_dir or default_cache_dir()
    clean_stale_parts(cache)
    return [resolve_source(spec, s, m, cache, http_state) for s in spec.sources]
