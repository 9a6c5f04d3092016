"""Peak memory of tiled upscaling is bounded by the tile band, not by the image.

A tiny random model upscales a tall synthetic image straight into a PNG, in a fresh process whose
peak RSS (VmHWM, reset through /proc/self/clear_refs after warm-up) is compared with the plan's
estimate and the budget. One HR float accumulator of the whole image would alone exceed the budget.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

LR_H, LR_W = 1400, 400
BUDGET = 96 * 2**20

SCRIPT = textwrap.dedent(
    """
    import ctypes, json, sys
    from pathlib import Path
    # Large blocks go back to the OS on free, so the peak RSS sees every allocation (none hides in
    # memory that the warm-up freed).
    ctypes.CDLL("libc.so.6").mallopt(-3, 64 * 1024)
    import numpy as np, torch
    from sr_pipeline.sr.models.checkpoints import LoadedModel
    from sr_pipeline.sr.models.diffusion import ResShiftSchedule
    from sr_pipeline.serving.upscale import write_upscaled_png
    from sr_pipeline.sr.images.decode import SourceImage
    from sr_pipeline.sr.serve.upscaler import TileSettings, Upscaler, provenance_text
    from sr_pipeline.sr.models.upsampler import SRUNet

    h, w, budget, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    torch.manual_seed(0)
    net = SRUNet(scale=4, block_out_channels=(8, 16), attention_levels=(False, False), norm_num_groups=4,
                 num_train_timesteps=4).eval().requires_grad_(False)
    model = LoadedModel(net=net, schedule=ResShiftSchedule(num_steps=4), info={"version": "tiny"}, path=Path("."))
    up = Upscaler(model, tiles=TileSettings(tile=64, overlap=8, batch=4), memory_budget=budget)
    y, x = np.mgrid[0:h, 0:w]
    colour = np.stack([(np.sin(x / 7 + c) * 90 + np.cos(y / 11) * 30 + 128) for c in range(3)], -1).astype(np.uint8)
    src = SourceImage(colour, None, "PNG", "RGB", "0" * 64)
    small = SourceImage(colour[:64, :64].copy(), None, "PNG", "RGB", "0" * 64)
    write_upscaled_png(up, small, out.with_name("warm.png"), {}, compress_level=1)  # one-time allocations

    def status():
        return {k: int(v.split()[0]) * 1024 for k, v in (l.split(":", 1) for l in open("/proc/self/status"))
                if k in ("VmRSS", "VmHWM")}

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    base = status()["VmRSS"]
    write_upscaled_png(up, src, out, provenance_text(up, src, "synthetic"), compress_level=1)
    plan = up.plan(h, w, 3, 1)
    print(json.dumps({"peak": status()["VmHWM"] - base, "estimate": plan.total, "batch": plan.batch}))
    """
)


def _can_reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux") or not _can_reset_peak(),
                    reason="needs Linux's resettable peak RSS (/proc/self/clear_refs)")
def test_peak_memory_stays_within_the_budget_on_a_large_image(tmp_path):
    from PIL import Image

    out = tmp_path / "big_x4.png"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(LR_H), str(LR_W), str(BUDGET), str(out)],
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[3])
    assert proc.returncode == 0, proc.stderr[-2000:]
    measured = json.loads(proc.stdout.strip().splitlines()[-1])
    whole_hr_float = (LR_H * 4) * (LR_W * 4) * 3 * 4  # one float accumulator of the whole HR image
    assert whole_hr_float > BUDGET
    assert measured["peak"] <= measured["estimate"] <= BUDGET, measured
    with Image.open(out) as im:
        assert im.size == (LR_W * 4, LR_H * 4) and im.info["sr_pipeline:model_version"] == "tiny"
        im.draft(None, None)
        bottom = im.crop((0, LR_H * 4 - 8, 64, LR_H * 4)).load()  # decodes every row: the stream is complete
        assert bottom is not None
