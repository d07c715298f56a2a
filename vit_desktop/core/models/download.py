"""Fetch a file over HTTP(S) with byte progress, cancellation, a hash check and an atomic finish.

Standard library only (urllib), so no new dependency for the one thing the program downloads:
torchvision's ImageNet weights. The rules that matter to a user:

- the final file name appears only once the bytes are complete and verified (``os.replace`` of a
  temporary file in the same folder), so a later start never mistakes half a file for weights;
- every failure (offline, HTTP error, dropped connection, short body, wrong hash, disk full)
  deletes the temporary file and raises :class:`DownloadError` with one line saying why;
- a cancel is honoured between chunks and leaves nothing behind either.
"""

from __future__ import annotations

import glob
import hashlib
import http.client
import os
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

from vit_desktop.core.errors import Cancelled, CancelToken, DownloadError
from vit_desktop.core.files import make_dirs
from vit_desktop.core.types import ProgressCallback

PARTIAL_SUFFIX = ".partial"
STALE_PARTIAL_SECONDS = 3600.0

_USER_AGENT = "vit-desktop"


def _one_line(error: BaseException) -> str:
    """A short reason without newlines; urllib hides the useful part in ``URLError.reason``."""
    reason: object = error
    if isinstance(error, urllib.error.URLError) and not isinstance(error, urllib.error.HTTPError):
        reason = error.reason
    text = str(reason)
    if isinstance(reason, BaseException):
        # "timed out" alone says less than "TimeoutError: timed out".
        name = type(reason).__name__
        text = f"{name}: {text}" if text else name
    return " ".join(text.split())


def download_file(
    url: str,
    dest: Path,
    *,
    sha256_prefix: str | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    timeout: float = 30.0,
    chunk_size: int = 1 << 20,
) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``.

    Args:
        url: http(s) (or file) URL.
        dest: final path; its folder is created. An existing file there is replaced atomically,
            and only after the new one is complete and verified.
        sha256_prefix: leading hex digits of the expected SHA-256 (torchvision file names end in
            ``-<prefix>.pth``); ``None`` skips the check.
        progress: called with (bytes done, bytes total) at the start and after every chunk;
            total is 0 when the server sends no Content-Length.
        cancel: checked between chunks; a cancel raises :class:`Cancelled`.
        timeout: seconds to wait for the connection and for each read.
        chunk_size: bytes per read; also how often progress and cancel are looked at.

    Raises:
        DownloadError: with a one-line reason; nothing is left at ``dest`` or beside it.
        Cancelled: when ``cancel`` was set; nothing is left behind.
    """
    dest = Path(dest)
    expected = sha256_prefix.lower() if sha256_prefix else None
    if cancel is not None:
        cancel.raise_if_cancelled()
    try:
        make_dirs(dest.parent)
        # A unique temporary name in the destination folder: os.replace is then atomic (same
        # filesystem) and two downloads of the same file cannot write into one partial file.
        fd, tmp_name = tempfile.mkstemp(
            dir=dest.parent, prefix=f".{dest.name}.", suffix=PARTIAL_SUFFIX
        )
    except OSError as error:
        raise DownloadError(f"cannot write into {dest.parent}: {_one_line(error)}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            _remove_stale_partials(dest, keep=tmp)
            digest = _stream(url, out, progress=progress, cancel=cancel, timeout=timeout,
                             chunk_size=chunk_size)
        if expected is not None and not digest.startswith(expected):
            raise DownloadError(
                f"{url}: hash mismatch: expected {expected}.., got {digest[: max(len(expected), 8)]}.."
            )
        os.replace(tmp, dest)
    except BaseException:
        # Whatever happened (error, cancel, KeyboardInterrupt), the partial file goes.
        tmp.unlink(missing_ok=True)
        raise
    return dest


def _remove_stale_partials(dest: Path, *, keep: Path) -> None:
    """Delete partial files of ``dest`` left by a process that was killed mid-download.

    Only old ones: a download in progress (another process, same file) writes its partial file
    every chunk, so anything untouched for STALE_PARTIAL_SECONDS is abandoned. Without this a
    crash during a 2.4 GB download would keep that much disk space forever, out of sight.
    """
    now = time.time()
    for path in dest.parent.glob(f".{glob.escape(dest.name)}.*{PARTIAL_SUFFIX}"):
        if path == keep:
            continue
        try:
            if now - path.stat().st_mtime > STALE_PARTIAL_SECONDS:
                path.unlink()
        except OSError:
            pass  # gone already, or not ours to delete: not worth failing a download over


def _stream(
    url: str,
    out: BinaryIO,
    *,
    progress: ProgressCallback | None,
    cancel: CancelToken | None,
    timeout: float,
    chunk_size: int,
) -> str:
    """Copy the body of ``url`` into ``out``; return the SHA-256 hex digest of what was written."""
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    done = 0
    total = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.strip().isdigit() else 0
            if progress is not None:
                progress(0, total)
            while True:
                if cancel is not None and cancel.cancelled:
                    raise Cancelled("download cancelled")
                chunk = response.read(chunk_size)
                if not chunk:
                    break
                try:
                    out.write(chunk)
                except OSError as error:
                    # A local problem (disk full, permissions), not the network's.
                    raise DownloadError(f"cannot write {url.rsplit('/', 1)[-1]}: "
                                        f"{_one_line(error)}") from None
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    except (DownloadError, Cancelled):
        raise
    except urllib.error.HTTPError as error:
        error.close()  # it holds the response and its socket open until closed
        raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from None
    except (OSError, http.client.HTTPException, ValueError) as error:
        # URLError (offline, refused, DNS), TimeoutError, ConnectionResetError, IncompleteRead
        # on chunked bodies, and ValueError for a malformed URL all end here as one line.
        raise DownloadError(f"{url}: {_one_line(error)}") from None
    # http.client returns a short body silently when the peer closes early; compare ourselves.
    if total and done != total:
        raise DownloadError(
            f"{url}: connection closed after {done} of {total} bytes"
        )
    return digest.hexdigest()


__all__ = ["PARTIAL_SUFFIX", "STALE_PARTIAL_SECONDS", "download_file"]
