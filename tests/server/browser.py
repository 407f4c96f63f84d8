"""Headless Chromium (Debian's `chromium` package) for the live-page tests: the page's DOM after
its scripts ran, and a screenshot. Each call is its own browser process with its own profile."""

from __future__ import annotations

import shutil
import subprocess
import tempfile

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_chromium() -> str | None:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(binary: str, url: str, *args: str, budget_ms: int) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="pipectl-chromium-") as profile:
        cmd = [
            binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
            *args, url,
        ]  # fmt: skip
        return subprocess.run(cmd, capture_output=True, timeout=120, check=True)


def dump_dom(binary: str, url: str, budget_ms: int = 4000) -> str:
    """The page's DOM as HTML once `budget_ms` of (virtual) time has passed."""
    return _run(binary, url, "--dump-dom", budget_ms=budget_ms).stdout.decode()


def screenshot(binary: str, url: str, path: str, size: str = "1400,1100") -> None:
    """A PNG of the page after its first polls."""
    _run(binary, url, f"--screenshot={path}", f"--window-size={size}", budget_ms=4000)
