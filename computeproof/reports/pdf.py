"""PDF reports: the HTML report printed by headless Chromium (no network, throwaway profile)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from computeproof.errors import ReportError

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT = 120.0


def find_chromium() -> str:
    """The headless Chromium executable, or a ReportError saying how to install it."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    raise ReportError(
        "PDF reports need headless Chromium, which is not installed: run "
        "`make deps` or `apt-get install chromium` (or write --format html)"
    )


def chromium_args(browser: str, profile: str) -> list[str]:
    """Flags for a headless, offline, throwaway Chromium run."""
    return [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
    ]


def html_to_pdf(html: str, pdf_path: str) -> None:
    """Print ``html`` to ``pdf_path`` with headless Chromium."""
    browser = find_chromium()
    with tempfile.TemporaryDirectory(prefix="computeproof-pdf-") as tmp:
        page = os.path.join(tmp, "report.html")
        with open(page, "w", encoding="utf-8") as f:
            f.write(html)
        out = os.path.abspath(pdf_path)
        cmd = [
            *chromium_args(browser, os.path.join(tmp, "profile")),
            "--no-pdf-header-footer",
            f"--print-to-pdf={out}",
            f"file://{page}",
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, check=False)
        except subprocess.TimeoutExpired as e:
            raise ReportError(f"Chromium did not print the PDF within {TIMEOUT:.0f} s") from e
        except OSError as e:
            raise ReportError(f"cannot run {browser}: {e.strerror}") from e
        if proc.returncode != 0 or not os.path.exists(out) or os.path.getsize(out) == 0:
            tail = (proc.stderr or "").strip().splitlines()[-1:] or ["no output"]
            raise ReportError(
                f"Chromium failed to print the PDF (exit {proc.returncode}): {tail[0]}"
            )
