"""A seeded tiny teacher + co-learning run on bundled images, printing the SHA-256 of every weights
file it writes: a refactor that must not change behaviour gives the same hashes before and after.

Runs the cpu-demo profile cut to a few steps (teacher, then co-learning with two fit pairs, so the
paired pre-fit runs too) on scikit-image's bundled photos; about a minute on 2 CPU cores.

    python benchmarks/weights_fingerprint.py [--out FOLDER]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from skimage import data as skdata

from sr_pipeline.sr.train.profile import Profile
from sr_pipeline.sr.images.tensors import downsample, to_tensor, to_uint8
from sr_pipeline.sr.train.stages.colearn import train_colearn
from sr_pipeline.sr.train.stages.teacher import train_teacher

REPO = Path(__file__).resolve().parents[1]


def _images() -> tuple[list[np.ndarray], list[np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    """HR references, field LR images (a blurrier camera) and two registered (HR, LR) fit pairs."""
    photos = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket()]
    hr = [p[:192, :192] for p in photos]
    down = lambda x: to_uint8(downsample(to_tensor(x), 4))  # noqa: E731
    field = [down(p[-128:, -128:]) for p in photos]
    pairs = [(p[64:128, 64:128], down(p[64:128, 64:128])) for p in photos[:2]]
    return hr, field, pairs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="folder for the run (default: a temp folder)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # the same reduction order on every machine size
    out = args.out or Path(tempfile.mkdtemp(prefix="weights-fingerprint-"))
    d = Profile.from_yaml(REPO / "configs" / "cpu-demo.yaml").to_dict()
    d["teacher"].update(steps=12, warmup_steps=2, batch_size=2)
    d["colearn"]["train"].update(steps=6, warmup_steps=1, batch_size=2)
    d["colearn"]["paired_fit"] = {**(d["colearn"].get("paired_fit") or {}), "prefit_steps": 5, "batch_size": 2, "patch_size": 32}
    profile = Profile.model_validate(d)
    hr, field, pairs = _images()
    teacher = train_teacher(profile, hr, out / "runs" / "teacher", out / "models" / "teacher" / "t").model_dir
    result = train_colearn(profile, teacher, hr, field, out / "runs" / "colearn", out / "models" / "student" / "s",
                           out / "models" / "downsampler" / "s", fit_pairs=pairs, fit_pair_names=["p0", "p1"])
    for folder in (teacher, *result.model_dirs.values()):
        for f in sorted(Path(folder).glob("*.safetensors")):
            print(f"{hashlib.sha256(f.read_bytes()).hexdigest()[:16]}  {f.relative_to(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
