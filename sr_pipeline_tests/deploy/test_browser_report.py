"""The report in a real browser: headless Chromium lays it out, decodes its images and draws it.

A copy of the page gets a probe script (the report itself has none) that records, after the load
event, which sections have a visible box and how many images decoded; ``--dump-dom`` returns it. A
screenshot of the untouched page must show ink where the summary is. Skipped only where Chromium
is missing and ``CI`` is not ``true``; in CI a missing Chromium fails the test.
"""

import html
import io
import json
import os
import re
import shutil
import subprocess
from datetime import date

import numpy as np
import pytest
import torch
from PIL import Image

from sr_pipeline.evaluation import calibration as ev
from sr_pipeline.evaluation.gate import GateThresholds
from sr_pipeline.evaluation.promotion import promote_after_gate
from test_evaluation import FakeLPIPS, add_pairs, offset, save_downsampler, save_sr

SECTIONS = ("headline", "summary", "gate", "realism", "trend", "models", "per-image")
PROBE = """<script>
window.addEventListener('load', () => {
  const visible = el => { if (!el) return false; const r = el.getBoundingClientRect(), s = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none'; };
  const out = {sections: {}, images: document.images.length};
  for (const id of %s) out.sections[id] = visible(document.getElementById(id));
  out.decoded = [...document.images].filter(i => i.complete && i.naturalWidth > 0 && visible(i)).length;
  out.headline = document.getElementById('headline').innerText;
  out.summary_rows = document.querySelectorAll('#summary tr').length;
  const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>""" % json.dumps(list(SECTIONS))


@pytest.fixture
def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI") == "true":
        pytest.fail("Chromium is missing in CI: .ci/run must `apt-get install -y chromium` (Debian's package)")
    pytest.skip("Chromium is not installed (Debian: apt-get install chromium); the browser check is skipped")


def browse(chromium: str, tmp_path, url: str, *extra: str) -> subprocess.CompletedProcess:
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--disable-background-networking", "--disable-component-update", "--no-first-run",
           "--hide-scrollbars", f"--user-data-dir={tmp_path / 'chromium-profile'}", *extra, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def report_page(layout, registry, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks; avoids OpenMP thrashing on a busy 2-core machine
    try:
        add_pairs(layout, registry, tmp_path, [1, 2, 3], "calib-1")
        teacher = save_sr(layout, "teacher", "t1")
        s1, s2 = save_sr(layout, "student", "s1"), save_sr(layout, "student", "s2", offset)
        down = save_downsampler(layout, "s1")
        ev.evaluate_gate(layout, s1, None, GateThresholds(), lpips=FakeLPIPS(), device="cpu")
        promote_after_gate(layout, s1)  # as promoted_student does after the gate's checks passed
        ev.run_evaluation(layout, teacher, s1, None, down, date(2026, 3, 2), lpips=FakeLPIPS(), device="cpu")
        out = ev.run_evaluation(layout, teacher, s2, s1, down, date(2026, 3, 9), lpips=FakeLPIPS(), device="cpu")
    finally:
        torch.set_num_threads(threads)
    return out.report_path


def test_report_sections_and_images_are_visible_in_chromium(chromium, report_page, tmp_path):
    page = report_page.read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"))
    run = browse(chromium, tmp_path, probe.as_uri(), "--virtual-time-budget=10000", "--dump-dom")
    assert run.returncode == 0, run.stderr[-2000:]
    found = re.search(r"<pre id=\"probe\">(.*?)</pre>", run.stdout, re.S)
    assert found, f"the probe did not run; Chromium said: {run.stderr[-1000:]}"
    result = json.loads(html.unescape(found.group(1)))

    assert result["sections"] == {s: True for s in SECTIONS}
    # best/median/worst x (LR, bicubic, teacher, new student, promoted student, HR) + the trend plot
    assert result["images"] == 3 * 6 + 1 and result["decoded"] == result["images"]
    assert result["summary_rows"] == 1 + 4  # header + bicubic, teacher, new student, promoted student
    text = result["headline"]
    assert "Image quality." in text and "plain enlargement" in text
    assert re.search(r"PSNR-Y \d+\.\d\d dB against \d+\.\d\d dB", text)  # the sentence carries its figures
    assert "Last report (2026-03-02" in text and "was not promoted" in text


def test_report_screenshot_is_not_blank(chromium, report_page, tmp_path):
    shot = tmp_path / "report.png"
    run = browse(chromium, tmp_path, report_page.as_uri(), "--window-size=1280,1600", f"--screenshot={shot}")
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    grey = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("L"), dtype=float)
    assert grey.shape == (1600, 1280)
    assert grey.std() > 20  # text, tables and pictures, not an empty page
    top = grey[:400]  # the title and the plain-language summary
    assert (top < 128).mean() > 0.01
    crops = grey[900:]  # tables, the trend plot and crops further down
    assert (crops < 250).mean() > 0.05
