"""Downloads: one file at a time, atomically, checksummed, with progress and mirrors.

Both functions are generators (see :mod:`playground.progress`): they yield
:class:`~playground.progress.Progress` after every chunk, so a job that runs them can be
cancelled between chunks, and they return the path of the finished file. A download
goes to ``<dest>.part`` and is renamed only once complete and verified, so ``dest`` is
either the whole, right file or absent.
"""

from __future__ import annotations

import hashlib
import http.client
import urllib.error
import urllib.request
from collections.abc import Generator
from pathlib import Path

from ..errors import BadFileError, OfflineError
from ..progress import Progress

CHUNK_BYTES = 1 << 16
NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError)


def _hashers(md5: str | None, sha256: str | None) -> dict[str, tuple[hashlib._Hash, str]]:
    """The checksums to compute: ``{label: (hasher, expected hex digest)}``."""
    wanted = {}
    if md5:
        wanted["md5"] = (hashlib.md5(), md5.lower())
    if sha256:
        wanted["sha256"] = (hashlib.sha256(), sha256.lower())
    return wanted


def file_matches(path: Path, *, md5: str | None = None, sha256: str | None = None) -> bool:
    """Whether ``path`` exists and has the given checksums (any file matches when none are given)."""
    if not path.is_file():
        return False
    wanted = _hashers(md5, sha256)
    if wanted:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                for hasher, _ in wanted.values():
                    hasher.update(chunk)
    return all(hasher.hexdigest() == expected for hasher, expected in wanted.values())


def download(url: str, dest: str | Path, *, timeout: float = 20, md5: str | None = None,
             sha256: str | None = None) -> Generator[Progress, None, Path]:
    """Download ``url`` to ``dest`` via ``dest.part``, yielding progress; return ``dest``.

    The checksums given are computed while the bytes arrive; a mismatch deletes the
    download and raises :class:`BadFileError`. Network failures propagate as urllib /
    OSError exceptions (:func:`cached_download` turns them into one message); either way,
    and when the job is cancelled, no ``.part`` file is left behind.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    wanted = _hashers(md5, sha256)
    finished = False
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            try:  # a server's header that is not a number means "unknown", as for http.client
                total = max(0, int(response.headers.get("Content-Length") or 0))
            except ValueError:
                total = 0
            done = 0
            while True:
                # read1: what has arrived (up to a chunk), so a slow server cannot hold a cancel for long
                chunk = response.read1(CHUNK_BYTES) if hasattr(response, "read1") else response.read(CHUNK_BYTES)
                if not chunk:
                    break
                out.write(chunk)
                for hasher, _ in wanted.values():
                    hasher.update(chunk)
                done += len(chunk)
                yield Progress(min(done / total, 1.0) if total else None,
                               f"Downloading {dest.name}: {done / 2**20:.1f}"
                               + (f" of {total / 2**20:.1f} MB" if total else " MB"))
        if total and done < total:
            raise http.client.IncompleteRead(b"", total - done)
        for label, (hasher, expected) in wanted.items():
            if hasher.hexdigest() != expected:
                raise BadFileError(f"The download of {dest.name} from {url} is damaged: its {label} checksum "
                                   f"is wrong (expected {expected}, got {hasher.hexdigest()}).")
        part.replace(dest)
        finished = True
    finally:
        if not finished:
            part.unlink(missing_ok=True)
    return dest


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    return str(reason).strip() or type(exc).__name__


def cached_download(urls: list[str], dest: str | Path, *, md5: str | None = None, sha256: str | None = None,
                    timeout: float = 20, what: str | None = None, hint: str = "") -> Generator[Progress, None, Path]:
    """``dest`` if it is already there with the right checksums, else the first mirror that works.

    Mirrors are tried in order. When every one is unreachable: :class:`OfflineError`
    ("Could not download <what>. Are you offline? <hint>" and up to three reasons). When
    at least one answered but no file had the right checksum: :class:`BadFileError`.
    """
    dest = Path(dest)
    if file_matches(dest, md5=md5, sha256=sha256):
        return dest
    what = what or dest.name
    reasons: list[str] = []
    damaged = False
    for url in urls:
        try:
            return (yield from download(url, dest, timeout=timeout, md5=md5, sha256=sha256))
        except BadFileError:
            damaged = True
            reasons.append(f"{url}: the file's checksum is wrong")
        except NETWORK_ERRORS as exc:
            reasons.append(f"{url}: {_reason(exc)}")
    listed = "\n".join(reasons[:3])
    if damaged:
        raise BadFileError(f"Could not download {what}: the file received has the wrong checksum "
                           f"(damaged in transit, or changed on the server).\n{listed}")
    raise OfflineError(f"Could not download {what}. Are you offline?" + (f" {hint}" if hint else "")
                       + (f"\n{listed}" if listed else ""))
