"""A headless chromium under selenium with the system's chromium-driver: the one browser of hack/
and tests/ (the console's browser tests, hack/console_screenshots.py).

selenium never downloads a browser or driver here: both come from Debian
(``apt-get install -y chromium chromium-driver``; ``bash hack/ensure-prereqs.sh --for test``).
"""

from __future__ import annotations

import shutil
from typing import Any

CHROMIUM = ("chromium", "chromium-browser")
DRIVER = "chromedriver"
INSTALL = "apt-get install -y chromium chromium-driver (or: bash hack/ensure-prereqs.sh --for test)"


class BrowserMissing(RuntimeError):
    """chromium or its driver is not installed (the message says what to run)."""


def chrome(width: int = 1280, height: int = 900, *, javascript: bool = True) -> Any:
    """A headless chromium of ``width`` x ``height`` pixels, JavaScript on or off (the caller quits it)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = next((p for p in (shutil.which(c) for c in CHROMIUM) if p), None)
    driver = shutil.which(DRIVER)
    if binary is None or driver is None:
        raise BrowserMissing(f"chromium and chromedriver are needed: {INSTALL}")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    # --no-sandbox: CI and the developers' machines run as root, where chromium's sandbox cannot start.
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--disable-extensions", "--no-first-run",
                "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    if not javascript:
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)
