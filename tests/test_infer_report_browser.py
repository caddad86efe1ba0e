"""Open the HTML report in headless Chromium (Debian package; `bash tools/ensure_chromium.sh` installs it)."""

import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image
from test_infer_report import build_sample_report

from wildrayzer.infer.report import TITLE_COLOR

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed; run `bash tools/ensure_chromium.sh` "
                                             "(Debian: apt-get install -y chromium) to enable this test")
def test_report_renders_in_headless_chromium(tmp_path):
    out = tmp_path / "eval"
    referenced, _ = build_sample_report(out)
    assert all((out / r).exists() for r in referenced)
    shot = tmp_path / "shot.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
           "--window-size=1280,900", (out / "index.html").resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert shot.is_file(), f"no screenshot (rc={proc.returncode}): {proc.stderr[-2000:]}"
    img = np.asarray(Image.open(shot).convert("RGB")).astype(np.float64)
    assert img.shape[:2] == (900, 1280)
    assert img.var(axis=(0, 1)).max() > 200.0, "screenshot is (nearly) uniform: the page did not render"
    title_rgb = np.array([int(TITLE_COLOR[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.float64)
    banner = (np.abs(img - title_rgb).max(axis=-1) <= 3).sum()
    assert banner > 1280 * 30, f"report banner colour {TITLE_COLOR} not found ({banner} px)"
    # The images were loaded: a large share of pixels is neither the page background nor the banner nor white.
    flat = img.reshape(-1, 3)
    plain = (np.abs(flat - [244, 245, 247]).max(-1) <= 3) | (np.abs(flat - title_rgb).max(-1) <= 3) | \
            (flat.min(-1) >= 250)
    assert (~plain).mean() > 0.05
