"""Real client: headless Chromium renders the HTML report to a PNG that is not blank.

Skips where no Chromium is installed (CI installs it with apt-get).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from fixtures_run import shared_outputs
from test_clients_qgis import fontconfig_env

pytestmark = pytest.mark.client


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


@pytest.fixture(scope="module")
def screenshot(tmp_path_factory):
    exe = _chromium()
    if exe is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    d = tmp_path_factory.mktemp("chromium")
    _, _, html_path, _ = shared_outputs()
    png = d / "report.png"
    profile = d / "profile"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", f"--screenshot={png}", "--window-size=1280,2000",
           "--hide-scrollbars", html_path.resolve().as_uri()]
    env = fontconfig_env(d)
    env["HOME"] = str(d)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=d)
    assert png.exists(), f"chromium wrote no screenshot (rc {proc.returncode}): {proc.stderr[-2000:]}"
    return html_path, png


def test_report_screenshot_is_not_blank(screenshot):
    _, png = screenshot
    img = mpimg.imread(png)
    assert img.shape[:2] == (2000, 1280)
    rgb = (img[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    assert len(np.unique(rgb, axis=0)) > 100        # text, tables and the basin map in colour
    assert (rgb.min(axis=1) < 128).mean() > 0.005    # dark text is drawn
    blue = (rgb[:, 2].astype(int) - rgb[:, 0].astype(int) > 60).mean()
    assert blue > 0.001                              # map streams / headings rule are drawn


def test_first_figure_is_loaded_by_the_browser(screenshot):
    """The figure area below the project table is not empty: the relative <img src> resolved."""
    html_path, png = screenshot
    img = mpimg.imread(png)[..., :3]
    # the lower half of the first screen holds section 2 with the basin map: many colours there
    lower = (img[1000:, :, :] * 255).astype(np.uint8).reshape(-1, 3)
    assert len(np.unique(lower, axis=0)) > 100
    assert Path(html_path.parent / "figures" / "basin_map.png").exists()
