"""Downloads against a real HTTP server on 127.0.0.1: progress, hash check, failures, cancel,
and the registry's cache-first behaviour (``ensure_weights``)."""

from __future__ import annotations

import dataclasses
import hashlib
import random
import socket
import struct
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from vit_desktop.core.errors import Cancelled, CancelToken, DownloadError
from vit_desktop.core.models import registry
from vit_desktop.core.models.download import PARTIAL_SUFFIX, STALE_PARTIAL_SECONDS, download_file

PAYLOAD = random.Random(7).randbytes(300_000)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
CHUNK = 32_768


class _Handler(BaseHTTPRequestHandler):
    """Serves PAYLOAD under several paths, each misbehaving in one way."""

    protocol_version = "HTTP/1.1"
    release: threading.Event  # set by the fixture; lets a stalled response end at teardown

    def do_GET(self) -> None:
        name = self.path.rsplit("/", 1)[-1]
        if name.startswith("missing"):
            self.send_error(404, "Not Found")
            return
        if name.startswith("broken"):
            self.send_error(500, "Internal Server Error")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if name.startswith("nolength"):
            # No Content-Length: the body ends when the server closes the connection.
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(PAYLOAD)
            self.close_connection = True
            return
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        if name.startswith("drop") or name.startswith("reset"):
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 3])
            self.wfile.flush()
            if name.startswith("reset"):
                # SO_LINGER 0: close with a TCP RST, as a crashing proxy would.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        if name.startswith("stall"):
            self.wfile.write(PAYLOAD[:CHUNK])
            self.wfile.flush()
            self.release.wait(10)
            self.close_connection = True
            return
        self.wfile.write(PAYLOAD)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    """Base URL of a threaded HTTP server on 127.0.0.1 with an OS-chosen port."""
    release = threading.Event()
    handler = type("Handler", (_Handler,), {"release": release})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: any connection attempt is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ----------------------------------------------------------------------------- download_file


def test_download_writes_file_and_reports_monotonic_progress(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "sub" / f"model-{PAYLOAD_SHA[:8]}.pth"
    calls: list[tuple[int, int]] = []
    result = download_file(f"{server}/good.bin", dest, sha256_prefix=PAYLOAD_SHA[:8],
                           progress=lambda d, t: calls.append((d, t)), chunk_size=CHUNK)
    assert result == dest
    assert dest.read_bytes() == PAYLOAD
    assert _leftovers(dest.parent) == [dest.name]
    assert calls[0] == (0, len(PAYLOAD))
    assert calls[-1] == (len(PAYLOAD), len(PAYLOAD))
    done = [d for d, _ in calls]
    assert done == sorted(done) and len(set(done)) == len(done)
    assert len(calls) >= len(PAYLOAD) // CHUNK  # progress per chunk, not only at the end
    assert {t for _, t in calls} == {len(PAYLOAD)}


def test_unknown_length_reports_total_zero(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "x.bin"
    calls: list[tuple[int, int]] = []
    download_file(f"{server}/nolength.bin", dest, progress=lambda d, t: calls.append((d, t)),
                  chunk_size=CHUNK)
    assert dest.read_bytes() == PAYLOAD
    assert {t for _, t in calls} == {0}
    assert calls[-1][0] == len(PAYLOAD)


def test_wrong_hash_is_refused_and_nothing_left(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "model-deadbeef.pth"
    with pytest.raises(DownloadError) as info:
        download_file(f"{server}/good.bin", dest, sha256_prefix="deadbeef", chunk_size=CHUNK)
    message = str(info.value)
    assert "hash mismatch" in message and "deadbeef" in message and PAYLOAD_SHA[:8] in message
    assert "\n" not in message
    assert _leftovers(tmp_path) == []


def test_hash_prefix_is_case_insensitive(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "m.pth"
    download_file(f"{server}/good.bin", dest, sha256_prefix=PAYLOAD_SHA[:10].upper())
    assert dest.read_bytes() == PAYLOAD


@pytest.mark.parametrize("path", ["drop.bin", "reset.bin"])
def test_connection_lost_midway_leaves_nothing(server: str, tmp_path: Path, path: str) -> None:
    dest = tmp_path / "m.pth"
    with pytest.raises(DownloadError) as info:
        download_file(f"{server}/{path}", dest, chunk_size=CHUNK)
    assert "\n" not in str(info.value)
    assert _leftovers(tmp_path) == []


def test_short_body_message_says_how_much_arrived(server: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=f"of {len(PAYLOAD)} bytes"):
        download_file(f"{server}/drop.bin", tmp_path / "m.pth", chunk_size=CHUNK)


def test_existing_file_survives_a_failed_download(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "m.pth"
    dest.write_bytes(b"previous good file")
    with pytest.raises(DownloadError):
        download_file(f"{server}/drop.bin", dest, chunk_size=CHUNK)
    assert dest.read_bytes() == b"previous good file"
    assert _leftovers(tmp_path) == ["m.pth"]


def test_cancel_midway_raises_and_leaves_nothing(server: str, tmp_path: Path) -> None:
    token = CancelToken()
    calls: list[int] = []

    def progress(done: int, total: int) -> None:
        calls.append(done)
        if done >= 2 * CHUNK:
            token.cancel()

    with pytest.raises(Cancelled):
        download_file(f"{server}/good.bin", tmp_path / "m.pth", progress=progress,
                      cancel=token, chunk_size=CHUNK)
    assert max(calls) < len(PAYLOAD)  # it stopped early instead of finishing first
    assert _leftovers(tmp_path) == []


def test_abandoned_partial_files_are_cleaned_up(server: str, tmp_path: Path) -> None:
    import os
    import time

    dest = tmp_path / "m.pth"
    abandoned = tmp_path / f".m.pth.crashed{PARTIAL_SUFFIX}"  # a download killed yesterday
    abandoned.write_bytes(b"x" * 1000)
    old = time.time() - 2 * STALE_PARTIAL_SECONDS
    os.utime(abandoned, (old, old))
    in_flight = tmp_path / f".m.pth.other{PARTIAL_SUFFIX}"  # another process, still writing
    in_flight.write_bytes(b"y")
    unrelated = tmp_path / f".n.pth.old{PARTIAL_SUFFIX}"  # another file's: not ours to judge
    unrelated.write_bytes(b"z")
    os.utime(unrelated, (old, old))
    download_file(f"{server}/good.bin", dest)
    assert _leftovers(tmp_path) == sorted([dest.name, in_flight.name, unrelated.name])


@pytest.mark.parametrize(("path", "status"), [("missing.pth", "404"), ("broken.pth", "500")])
def test_http_error_status_is_reported(server: str, tmp_path: Path, path: str, status: str) -> None:
    with pytest.raises(DownloadError, match=f"HTTP {status}") as info:
        download_file(f"{server}/{path}", tmp_path / "m.pth")
    assert path in str(info.value)
    assert _leftovers(tmp_path) == []


def test_refused_connection_is_one_line(closed_port_url: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="refused") as info:
        download_file(f"{closed_port_url}/m.pth", tmp_path / "m.pth", timeout=5)
    assert "\n" not in str(info.value)
    assert _leftovers(tmp_path) == []


def test_stalled_server_times_out(server: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="timed out"):
        download_file(f"{server}/stall.bin", tmp_path / "m.pth", timeout=0.3, chunk_size=CHUNK)
    assert _leftovers(tmp_path) == []


def test_malformed_url_is_a_download_error(tmp_path: Path) -> None:
    with pytest.raises(DownloadError):
        download_file("nonsense://x/y.pth", tmp_path / "y.pth")
    assert _leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- ensure_weights


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache for the test, via TORCH_HOME (as a user would set it)."""
    import torch.hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(registry.BASE_URL_ENV, raising=False)
    # A set_dir() done elsewhere in the process would win over TORCH_HOME.
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    assert registry.weights_path("vit_b_16").parent == checkpoints
    return checkpoints


@pytest.fixture
def payload_entry(monkeypatch: pytest.MonkeyPatch) -> registry.RegistryEntry:
    """vit_b_32's entry renamed to a file whose name carries PAYLOAD's real hash prefix."""
    entry = dataclasses.replace(
        registry.REGISTRY["vit_b_32"],
        filename=f"vit_b_32-{PAYLOAD_SHA[:8]}.pth",
        sha256_prefix=PAYLOAD_SHA[:8],
    )
    monkeypatch.setitem(registry.REGISTRY, "vit_b_32", entry)
    return entry


def test_ensure_weights_downloads_once_then_works_offline(
    server: str, hub: Path, payload_entry: registry.RegistryEntry, closed_port_url: str
) -> None:
    assert not registry.is_cached("vit_b_32")
    calls: list[tuple[int, int]] = []
    path = registry.ensure_weights("vit_b_32", base_url=server,
                                   progress=lambda d, t: calls.append((d, t)))
    assert path == hub / payload_entry.filename
    assert path.read_bytes() == PAYLOAD
    assert calls[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert registry.is_cached("vit_b_32")
    assert _leftovers(hub) == [payload_entry.filename]

    # Second time: no server at all, and no progress because nothing is fetched.
    calls.clear()
    again = registry.ensure_weights("vit_b_32", base_url=closed_port_url,
                                    progress=lambda d, t: calls.append((d, t)))
    assert again == path and calls == []


def test_ensure_weights_honours_base_url_env(
    server: str, hub: Path, payload_entry: registry.RegistryEntry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(registry.BASE_URL_ENV, server + "/mirror/")
    path = registry.ensure_weights("vit_b_32")
    assert path.read_bytes() == PAYLOAD


def test_cached_weights_need_no_network(hub: Path, closed_port_url: str) -> None:
    hub.mkdir(parents=True)
    cached = hub / registry.REGISTRY["vit_b_16"].filename
    cached.write_bytes(b"weights already here")
    path = registry.ensure_weights("vit_b_16", base_url=closed_port_url)
    assert path == cached
    assert cached.read_bytes() == b"weights already here"


def test_empty_cached_file_is_not_trusted(hub: Path, closed_port_url: str) -> None:
    hub.mkdir(parents=True)
    (hub / registry.REGISTRY["vit_b_16"].filename).write_bytes(b"")
    assert not registry.is_cached("vit_b_16")
    with pytest.raises(DownloadError):
        registry.ensure_weights("vit_b_16", base_url=closed_port_url)


def test_offline_message_names_file_and_folder(hub: Path, closed_port_url: str) -> None:
    with pytest.raises(DownloadError) as info:
        registry.ensure_weights("vit_b_16", base_url=closed_port_url)
    message = str(info.value)
    assert message.startswith("vit_b_16: weights not cached and the download failed (")
    assert message.endswith(f"Put vit_b_16-c867db91.pth into {hub} and try again.")
    assert "refused" in message
    assert "\n" not in message
    assert _leftovers(hub) == []


def test_mirror_with_wrong_file_is_refused(server: str, hub: Path) -> None:
    # The server hands out PAYLOAD for any name: not the real vit_b_16 weights.
    with pytest.raises(DownloadError, match="hash mismatch: expected c867db91") as info:
        registry.ensure_weights("vit_b_16", base_url=server)
    assert "Put vit_b_16-c867db91.pth into" in str(info.value)
    assert not registry.is_cached("vit_b_16")
    assert _leftovers(hub) == []


def test_cancelled_registry_download_leaves_nothing(
    server: str, hub: Path, payload_entry: registry.RegistryEntry
) -> None:
    token = CancelToken()

    def progress(done: int, total: int) -> None:
        if done > 0:  # bytes are arriving: the user presses Cancel
            token.cancel()

    with pytest.raises(Cancelled):
        registry.ensure_weights("vit_b_32", base_url=server, progress=progress, cancel=token)
    assert not registry.is_cached("vit_b_32")
    assert hub.is_dir() and _leftovers(hub) == []
