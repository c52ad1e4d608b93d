"""Driving `gsplat-py view` / `train --viewer` in a subprocess and its page in a headless Chromium (plain
functions, shared by the viewer tests and scripts/bench_viewer.py).

Chromium comes from the distribution's packages (``apt-get install chromium``; ``GSPLAT_PY_CHROMIUM`` names
another binary), driven through Playwright's Python package; nothing is downloaded. The tests skip without
them, unless ``GSPLAT_PY_BROWSER_TESTS=required`` (as .ci/run sets it), when they fail instead.
"""

from __future__ import annotations

import io
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import gsplat_py

# --headless --disable-gpu still gives WebGL 2, through ANGLE on SwiftShader (Chromium's software
# renderer): viser draws the background image with it.
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 800, "height": 600}
# viser's client lowers the canvas resolution when its own frame rate drops (slow software WebGL); pinned
# to 1 device pixel per CSS pixel, the canvas is exactly the size of its element and of the frames rendered.
PAGE_QUERY = "?fixedDpr=1"
EXACT_STATUS = re.compile(r"exact (\d+)×(\d+), \d+ ms \(frame (\d+)\)")
SERVER_START_S = 120.0
PAGE_WAIT_MS = 120_000


def chromium_path() -> str | None:
    return (
        os.environ.get("GSPLAT_PY_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )


def require_browser() -> None:
    """Skip (or fail, when the browser tests are required) unless viser, Playwright and Chromium are here."""
    missing = []
    for module, hint in (("viser", "pip install viser"), ("playwright", "pip install playwright")):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"{module} ({hint})")
    if chromium_path() is None:
        missing.append("Chromium (apt-get install chromium)")
    if missing:
        message = "the browser tests need " + ", ".join(missing)
        if os.environ.get("GSPLAT_PY_BROWSER_TESTS") == "required":
            pytest.fail(message)
        pytest.skip(message)


def launch_chromium(playwright, user_data_dir: Path):
    """A fresh headless Chromium context (its own profile folder) with one 800x600 page size."""
    return playwright.chromium.launch_persistent_context(
        str(user_data_dir),
        executable_path=chromium_path(),
        args=CHROMIUM_FLAGS,
        headless=True,
        viewport=VIEWPORT,
        device_scale_factor=1,
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Server:
    """A ``python -m gsplat_py ...`` subprocess whose stdout is read line by line in the background."""

    def __init__(self, args: list[str], log: Path):
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1")
        self.log = log
        self._stderr = open(log, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gsplat_py", *args],
            # the gsplat_py under test: the repository's, or the installed one when that is what is imported
            cwd=Path(gsplat_py.__file__).resolve().parents[1],
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            # A job started in the background by a non-interactive shell (as CI may be) ignores SIGINT, and
            # so would this child, which is stopped with SIGINT: give it the default disposition back.
            preexec_fn=_default_sigint,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def url(self) -> str:
        """The page's address, from the line that prints it (127.0.0.1, as the server is bound there)."""
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1.0)
            except queue.Empty:
                if self.process.poll() is not None:
                    message = f"the server exited with {self.process.returncode}: {self.stderr()}"
                    raise AssertionError(message) from None
                continue
            match = re.search(r"http://localhost:(\d+)", line)
            if match:
                return f"http://127.0.0.1:{match.group(1)}/{PAGE_QUERY}"
        raise AssertionError(f"no URL printed within {SERVER_START_S} s: {self.stderr()}")

    def stderr(self) -> str:
        if not self._stderr.closed:
            self._stderr.flush()
        return self.log.read_text()

    def interrupt(self, timeout: float = 60.0) -> int:
        """Ctrl-C; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.close()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._stderr.close()


def open_page(context, url: str):
    page = context.new_page()
    page.goto(url)
    return page


def close_notifications(page) -> None:
    """Close viser's notifications (e.g. "Software WebGL rendering detected"), which lie over the canvas."""
    for button in page.locator(".mantine-Notification-closeButton").all():
        button.click()
    page.locator(".mantine-Notification-root").first.wait_for(state="detached", timeout=PAGE_WAIT_MS)


def status_text(page) -> str:
    return page.get_by_text(EXACT_STATUS).or_(page.get_by_text(re.compile(r"^preview "))).inner_text()


def wait_for_exact_frame(page, after: int = 0) -> tuple[int, int, int]:
    """Waits until the tab's status shows an exact frame numbered above ``after``: (width, height, frame)."""
    deadline = time.monotonic() + PAGE_WAIT_MS / 1000.0
    while time.monotonic() < deadline:
        locator = page.get_by_text(EXACT_STATUS)
        if locator.count():
            match = EXACT_STATUS.search(locator.inner_text())
            if match and int(match.group(3)) > after:
                return int(match.group(1)), int(match.group(2)), int(match.group(3))
        page.wait_for_timeout(100)
    raise AssertionError(f"no exact frame after frame {after}; the status reads: {page.inner_text('body')}")


def wait_for_exact_frame_of_the_canvas(page) -> tuple[int, int, int]:
    """Waits for an exact frame the size of the canvas: (width, height, frame). The page lays itself out
    after it connects (the control panel takes its share of the width), and a first frame may be rendered
    for the canvas size before that; the viewer renders again for the new size."""
    deadline = time.monotonic() + PAGE_WAIT_MS / 1000.0
    frame = 0
    while time.monotonic() < deadline:
        width, height, frame = wait_for_exact_frame(page, after=frame)
        box = canvas_box(page)
        if (width, height) == (round(box["width"]), round(box["height"])):
            return width, height, frame
    raise AssertionError(f"no exact frame the size of the canvas ({canvas_box(page)}) after frame {frame}")


def canvas_box(page) -> dict:
    return page.locator("canvas").first.bounding_box()


def screenshot(page) -> np.ndarray:
    """uint8 [H, W, 3] of the canvas's region without notifications, once two shots in a row agree (the
    last frame decoded)."""
    close_notifications(page)
    box = canvas_box(page)
    clip = {"x": box["x"], "y": box["y"], "width": box["width"], "height": box["height"]}
    previous = None
    for _ in range(50):
        shot = np.asarray(Image.open(io.BytesIO(page.screenshot(clip=clip))).convert("RGB"))
        if previous is not None and np.array_equal(shot, previous):
            return shot
        previous = shot
        page.wait_for_timeout(200)
    raise AssertionError("the canvas did not settle")


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    difference = a.astype(np.float64) - b.astype(np.float64)
    if mask is not None:
        difference = difference[mask]
    mse = float(np.mean(difference**2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)
