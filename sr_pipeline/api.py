"""The Python API: restore images from a plant's own script with what the command line uses.

``sr-pipeline upscale`` and the archive cut an image into the same tiles, plan its memory the same way
and judge the output's consistency with its input against the same camera model and thresholds; this
module gives a script those three without the command line or the Dagster layer::

    import numpy as np
    from sr_pipeline import load_restorer

    restorer = load_restorer("data/models/student/20261207T043126Z-58ed19")
    result = restorer.upscale(np.zeros((32, 32, 3), np.uint8))
    print(result.image.shape, result.verdict)  # e.g. (128, 128, 3) ok

Torch is imported when a model is loaded, not when :mod:`sr_pipeline` is.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sr_pipeline.sr.serve.tiles import TileSettings

if TYPE_CHECKING:
    from sr_pipeline.serving.consistency import ConsistencyCheck
    from sr_pipeline.sr.serve.upscaler import Upscaler
    from sr_pipeline.sr.train.profile import Profile

DEFAULT_MEMORY_BUDGET_GIB = 4.0  # the command line's --memory-budget default


@dataclass(frozen=True)
class Restored:
    """One restored image and its consistency verdict.

    Args:
        image: the HR image in the input's mode and depth (HxWx3, or HxWx1 for grey input, uint8 or
            uint16); None for :meth:`Restorer.upscale_file`, whose image is in the file.
        verdict: ``ok`` when the camera model, applied to the output, gives back the input within the
            thresholds; ``check`` when a person should look (``consistency["consistency_reasons"]`` says why).
        consistency: every figure of the verdict, as the archive's manifest and ``upscale --json`` hold them.
        path: the written PNG (:meth:`Restorer.upscale_file` only).
    """

    image: np.ndarray | None
    verdict: str
    consistency: dict[str, Any]
    path: Path | None = None


class Restorer:
    """A model folder loaded for restoring images, with the consistency check of its camera model.

    Build it with :func:`load_restorer`.
    """

    def __init__(self, upscaler: "Upscaler", check: "ConsistencyCheck"):
        self.upscaler, self.check = upscaler, check

    @property
    def scale(self) -> int:
        """The model's upscaling factor (4 for the project's models)."""
        return self.upscaler.scale

    def upscale(self, lr: np.ndarray, camera: str | None = None) -> Restored:
        """Restore one LR image held in memory.

        Args:
            lr: HxWx3 RGB or HxW / HxWx1 grey, uint8 or uint16.
            camera: the field camera id that took it (its own thresholds when the model has them).

        Returns:
            :class:`Restored` with the image and its verdict.
        """
        from sr_pipeline.sr.images.decode import SourceImage
        from sr_pipeline.sr.serve.consistency import ConsistencyPass
        from sr_pipeline.sr.serve.upscaler import iter_output_rows

        lr = np.asarray(lr)
        if lr.dtype.kind != "u" or lr.dtype.itemsize not in (1, 2):
            raise ValueError(f"lr must be uint8 or uint16, not {lr.dtype.name}")
        colour = lr[..., None] if lr.ndim == 2 else lr
        if colour.ndim != 3 or colour.shape[2] not in (1, 3):
            raise ValueError(f"lr must be HxW, HxWx1 or HxWx3, not shape {lr.shape}")
        if colour.shape[0] < 1 or colour.shape[1] < 1:
            raise ValueError(f"lr is empty (shape {lr.shape}): it needs at least one pixel")
        colour = colour.astype(colour.dtype.newbyteorder("="), copy=False)  # big-endian uint16 as native
        src = SourceImage(colour=np.ascontiguousarray(colour), alpha=None, orig_format="array",
                          orig_mode="L" if colour.shape[2] == 1 else "RGB",
                          sha256=hashlib.sha256(colour.tobytes()).hexdigest())
        cpass = self.check.start(src.colour, camera)
        held = ConsistencyPass.held_bytes(self.check.camera, src.height, src.width)
        out = np.empty((src.height * self.scale, src.width * self.scale, colour.shape[2]), dtype=colour.dtype)
        row = 0
        for rows in iter_output_rows(self.upscaler, src, held=held + out.nbytes):
            cpass.feed(rows)
            out[row:row + rows.shape[0]] = rows.reshape(rows.shape[0], rows.shape[1], -1)
            row += rows.shape[0]
        record = cpass.finish().record()
        return Restored(out, record["consistency_verdict"], record)

    def upscale_file(self, source: str | Path, target: str | Path, camera: str | None = None, *,
                     overwrite: bool = False) -> Restored:
        """Restore one image file into a PNG, streamed band by band as ``sr-pipeline upscale`` writes it
        (provenance and verdict in its text chunks; written to a temporary file, then renamed).

        Args:
            source: any image file ``sr-pipeline upscale`` reads (PNG, JPEG, TIFF, BMP, WebP).
            target: the PNG to write; an existing one is kept unless ``overwrite``.
            camera: the field camera id that took it.
            overwrite: replace an existing ``target``.

        Returns:
            :class:`Restored` with ``path`` set and ``image`` None.
        """
        from sr_pipeline.serving.upscale import write_upscaled_png
        from sr_pipeline.sr.images.decode import read_image
        from sr_pipeline.sr.serve.upscaler import provenance_text

        source, target = Path(source), Path(target)
        if not str(target).strip() or target.is_dir():
            raise ValueError(f"target {str(target)!r} is not a file name; pass the PNG to write")
        if target.exists() and target.resolve() == source.resolve():
            raise ValueError(f"target {target} is the source image itself; write the restoration elsewhere")
        src = read_image(source)
        text = provenance_text(self.upscaler, src, source.name)
        _, result = write_upscaled_png(self.upscaler, src, target, text, overwrite=overwrite,
                                       consistency=self.check.start(src.colour, camera))
        record = result.record()
        return Restored(None, record["consistency_verdict"], record, target)


def load_restorer(model_dir: str | Path, *, device: str = "auto", tiles: TileSettings = TileSettings(),
                  memory_budget_gib: float = DEFAULT_MEMORY_BUDGET_GIB,
                  camera_model: str | Path | None = None) -> Restorer:
    """Load a student (or teacher) folder for restoring images.

    Args:
        model_dir: a model folder as ``sr-pipeline models`` lists it (it holds training.json).
        device: ``auto``, ``cpu`` or ``cuda``.
        tiles: the tiling (tile side, overlap, tiles per network call), as ``--tile/--overlap/--batch``.
        memory_budget_gib: peak memory per image; the batch is lowered to fit (0: no limit).
        camera_model: the camera model that judges consistency: None for the student's co-trained G,
            a downsampler folder, or ``"bicubic"``.

    Returns:
        A :class:`Restorer`.

    Raises:
        ValueError: the folder is not a model or cannot be loaded, a setting is out of range, or its camera
            model or thresholds cannot be read.
    """
    from sr_pipeline.common.errors import UsageError
    from sr_pipeline.serving.audit import load_consistency_check
    from sr_pipeline.serving.upscale import load_model
    from sr_pipeline.sr.models.checkpoints import check_model_folder
    from sr_pipeline.sr.models.devices import resolve_device
    from sr_pipeline.sr.serve.upscaler import Upscaler

    model_dir = Path(model_dir)
    check_model_folder("model_dir", model_dir)  # UsageError is a ValueError
    if not (isinstance(memory_budget_gib, (int, float)) and 0 <= memory_budget_gib < float("inf")):
        raise ValueError(f"memory_budget_gib {memory_budget_gib!r} must be a finite number >= 0 (0: no limit)")
    device = resolve_device(device)
    model = load_model(model_dir, device)  # its UsageError is a ValueError
    steps = model.schedule.num_steps if model.info.get("kind") == "teacher" else 1
    budget = None if memory_budget_gib == 0 else int(memory_budget_gib * 2**30)
    upscaler = Upscaler(model, device=device, steps=steps, tiles=tiles, memory_budget=budget)
    try:
        check = load_consistency_check(model_dir, upscaler.scale, None if camera_model is None else str(camera_model),
                                       None, upscaler.device)
    except UsageError as exc:
        raise ValueError(str(exc)) from None
    return Restorer(upscaler, check)


def load_profile(path: str | Path) -> "Profile":
    """Read and validate a training profile (``configs/*.yaml``).

    Args:
        path: the profile's YAML file.

    Returns:
        The validated :class:`~sr_pipeline.sr.train.profile.Profile` (every knob of training).
    """
    from sr_pipeline.sr.train.profile import Profile

    try:
        return Profile.from_yaml(Path(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the profile {path}: {exc}") from None
