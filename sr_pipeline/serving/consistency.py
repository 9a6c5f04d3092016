"""Which camera model and thresholds judge a model's outputs, and how a verdict is written down.

A student's outputs are judged with the downsampler G co-trained with it (the learned model of the
field camera; ``downsampler`` in its ``training.json``, else the sibling folder of the same
version), or bicubic-down when it has none or ``--camera-model bicubic`` asks for the model-free
second opinion. Thresholds come from the ``consistency.json`` fitted on the calibration pairs and
stored in the model's folder (per field camera and per kind of camera model: G's limits never judge
bicubic-down), else the built-in defaults; the output says which.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sr_pipeline.sr.models.checkpoints import linked_path, read_info
from sr_pipeline.sr.serve.consistency import (
    THRESHOLDS_FILE, VERDICTS, Y_WEIGHTS, BicubicCamera, Camera, Consistency, ConsistencyPass, LearnedCamera,
    Thresholds, camera_model_kind, load_thresholds, thresholds_for,
)
from sr_pipeline.sr.images.png_stream import TEXT_PREFIX
from sr_pipeline.sr.judge.wording import COLOUR_DECIMALS, PEAK_DECIMALS, PSNR_DECIMALS, SHARE_DECIMALS

BICUBIC = "bicubic"


def co_trained_downsampler(model_dir: Path) -> Path | None:
    """The downsampler trained with a student (None for a teacher or a student without one)."""
    model_dir = Path(model_dir)
    try:
        info = read_info(model_dir)
    except FileNotFoundError:
        info = {}
    except ValueError as exc:  # never a silent fall back to bicubic: read_info names the corrupt file
        raise ValueError(f"{exc} (or pass --camera-model)") from None
    except OSError as exc:
        raise ValueError(f"cannot read {model_dir / 'training.json'} ({exc.strerror or exc}); "
                         "fix its permissions or pass --camera-model") from None
    recorded = info.get("downsampler") if isinstance(info, dict) else None
    # stored relative to the data root (older folders: absolute), read from where the folder is now
    candidates = [linked_path(model_dir, recorded)] if isinstance(recorded, str) and recorded else []
    candidates.append(model_dir.parent.parent / "downsampler" / model_dir.name)
    return next((p for p in candidates if (p / "config.json").is_file()), None)


@dataclass
class ConsistencyCheck:
    """A camera model plus per-camera thresholds: starts one :class:`ConsistencyPass` per image."""

    camera: Camera
    thresholds: dict[str, Thresholds] = field(default_factory=dict)
    thresholds_source: str = "built-in defaults"
    device: str = "cpu"  # where the passes compute (a learned camera is loaded there)

    def thresholds_of(self, camera_id: str | None) -> Thresholds:
        return thresholds_for(self.thresholds, camera_id)

    def start(self, lr: np.ndarray, camera_id: str | None = None, *, keep_map: bool = False) -> ConsistencyPass:
        return ConsistencyPass(self.camera, lr, self.thresholds_of(camera_id), keep_map=keep_map, device=self.device)

    def held_bytes(self, lr_height: int, lr_width: int) -> int:
        return ConsistencyPass.held_bytes(self.camera, lr_height, lr_width)


def load_check(model_dir: Path | None, scale: int, *, camera_model: str | None = None,
               thresholds_file: Path | None = None, device: str = "cpu") -> ConsistencyCheck:
    """The check for outputs of ``model_dir`` (``camera_model``: a downsampler folder, ``bicubic``, or
    None for the co-trained one). Raises ``ValueError`` (one sentence) for a bad folder or file."""
    if camera_model == BICUBIC:
        camera: Camera = BicubicCamera(scale)
    else:
        g_dir = Path(camera_model) if camera_model else (co_trained_downsampler(model_dir) if model_dir else None)
        if g_dir is None:
            camera = BicubicCamera(scale)
        else:
            if not (g_dir / "config.json").is_file():
                raise ValueError(f"--camera-model {g_dir} is not a downsampler folder (no config.json)")
            try:
                camera = LearnedCamera.from_dir(g_dir, device)
            except Exception as exc:  # bad JSON, corrupt weights, ...
                detail = (str(exc).strip().splitlines() or [""])[0]
                raise ValueError(f"cannot load the camera model in {g_dir} ({type(exc).__name__}: {detail})") from None
            if camera.scale != scale:
                raise ValueError(f"the camera model in {g_dir} is x{camera.scale}, the outputs are x{scale}")
    if thresholds_file is None and model_dir is not None and (Path(model_dir) / THRESHOLDS_FILE).is_file():
        thresholds_file = Path(model_dir) / THRESHOLDS_FILE
    if thresholds_file is None:
        return ConsistencyCheck(camera, device=device)
    fitted = load_thresholds(Path(thresholds_file), camera.name)
    if not fitted:  # never judge with limits fitted for another camera model (G's are not bicubic's)
        return ConsistencyCheck(camera, {}, f"built-in defaults ({thresholds_file} holds no thresholds fitted for "
                                        f"{camera_model_kind(camera.name)} camera models)", device=device)
    return ConsistencyCheck(camera, fitted, str(thresholds_file), device=device)


def consistency_text(result: Consistency) -> dict[str, str]:
    """The PNG text of a verdict (written after the image data, once every row is known), with every figure's
    decimals as the record keeps them: a manifest filled from this text prints the digits the reason gives (a
    peak of 40.46 written as 40.5 would read 41 on the page beside the reason's 40)."""
    rec = result.record()
    text = {
        f"{TEXT_PREFIX}consistency": rec["consistency_verdict"],
        f"{TEXT_PREFIX}consistency_psnr_y": f"{rec['consistency_psnr_y']:.{PSNR_DECIMALS}f}",
        f"{TEXT_PREFIX}consistency_flagged_share": f"{rec['consistency_flagged_share']:.{SHARE_DECIMALS}f}",
        f"{TEXT_PREFIX}consistency_peak": f"{rec['consistency_peak']:.{PEAK_DECIMALS}f}",
        f"{TEXT_PREFIX}consistency_colour_shift": ",".join(f"{c:.{COLOUR_DECIMALS}f}"
                                                         for c in rec["consistency_colour_shift"]),
        f"{TEXT_PREFIX}consistency_camera": rec["consistency_camera"],
    }
    if rec["consistency_reasons"]:
        text[f"{TEXT_PREFIX}consistency_reasons"] = rec["consistency_reasons"]
    return text


def stored_consistency(text: dict[str, str]) -> dict | None:
    """The consistency figures an output's PNG text carries, as :meth:`Consistency.record` names them
    (rounded as written); None when it was not judged. The reader of :func:`consistency_text`."""

    def get(name: str) -> str | None:
        return text.get(f"{TEXT_PREFIX}consistency{name}")

    if get("") not in VERDICTS:
        return None
    try:
        colour = [float(c) for c in (get("_colour_shift") or "").split(",") if c]
        weights = Y_WEIGHTS.tolist()
        intensity = sum(weights) * colour[0] if len(colour) == 1 else sum(w * c for w, c in zip(weights, colour))
        return {"consistency_verdict": get(""), "consistency_psnr_y": float(get("_psnr_y")),
                "consistency_flagged_share": float(get("_flagged_share")), "consistency_peak": float(get("_peak")),
                "consistency_colour_shift": colour, "consistency_intensity_shift": round(intensity, 3),
                "consistency_camera": get("_camera"), "consistency_reasons": get("_reasons") or ""}
    except (TypeError, ValueError, IndexError):
        return None
