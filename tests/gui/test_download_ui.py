"""A registry model download as the user sees it: bytes, rate, Cancel, and closing mid-way."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vit_desktop.gui.jobs import Outcome

MS = 60_000
TOTAL = 50 * 1024 * 1024  # announced size: the transfer is never allowed to finish


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    """Sends 64 KB every 20 ms of a file that never completes in the test's lifetime."""

    stop = threading.Event()

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(TOTAL))
        self.end_headers()
        chunk = b"\0" * 65536
        try:
            for _ in range(TOTAL // len(chunk)):
                if self.stop.is_set():
                    return
                self.wfile.write(chunk)
                time.sleep(0.02)
        except (BrokenPipeError, ConnectionResetError):
            return  # the client cancelled: that is the point

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def slow_server(monkeypatch) -> Iterator[str]:
    _SlowHandler.stop.clear()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("VIT_DESKTOP_WEIGHTS_BASE_URL", url)
    yield url
    _SlowHandler.stop.set()
    server.shutdown()
    server.server_close()
    thread.join(10)


def _hub_files() -> list[Path]:
    import os

    root = Path(os.environ["TORCH_HOME"])
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_download_shows_progress_and_cancel_leaves_nothing(qtbot, make_window, slow_server) -> None:
    w = make_window()
    progress: list[tuple[int, int]] = []
    job = w.models.load_model("vit_b_16")
    job.progressed.connect(progress.append)
    w.intake.add_paths([str(Path(__file__))])  # dropped meanwhile: waits for the model
    status = w.run_status
    qtbot.waitUntil(lambda: len(progress) >= 3 and progress[-1][0] > 0, timeout=MS)
    qtbot.waitUntil(lambda: "Downloading weights" in status.status_label.text(), timeout=MS)
    text = status.status_label.text()
    assert "MB" in text and "/s" in text and "left" in text
    assert "1 item waiting for the model" in text
    assert progress[-1][1] == TOTAL
    assert status.cancel_button.isVisible()
    with qtbot.waitSignal(job.finished, timeout=MS) as blocker:
        status.cancel_button.click()
    assert blocker.args == [Outcome.CANCELLED]
    assert status.status_label.text() == "Model loading cancelled."
    assert not status.cancel_button.isVisible()
    assert "No model loaded" in w.message_bar.text
    assert _hub_files() == []  # no half-downloaded weights left behind


def test_closing_during_a_download_cancels_and_joins(qtbot, make_window, slow_server) -> None:
    w = make_window()
    job = w.models.load_model("vit_b_16")
    with qtbot.waitSignal(job.progressed, timeout=MS):
        pass
    t0 = time.monotonic()
    w.close()
    assert w.controller.compute_thread.isFinished()
    assert time.monotonic() - t0 < 10
    assert _hub_files() == []
