"""The camera registry: which cameras upload images, what each one is for and its scale factor.

Loaded from ``configs/cameras.yaml`` (or ``$SR_PIPELINE_CAMERAS``) and validated with pydantic, so
a typo in the file fails with a message that names the field, not with a KeyError at ingest time.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

DEFAULT_CAMERAS_FILE = Path(__file__).resolve().parents[2] / "configs" / "cameras.yaml"

# Camera ids become folder names and part of Dagster partition keys: keep them plain.
RESERVED_CAMERA_ID = "all"  # the thresholds fitted on all cameras' pairs, and camera-less promotions
CAMERA_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")  # at most 63: a Dagster tag value's limit


class CameraRegistryError(ValueError):
    """The registry file is missing, unreadable or invalid."""


class UnknownCameraError(KeyError):
    """A camera id that the registry does not list."""

    def __init__(self, camera_id: str, known: list[str]):
        self.camera_id = camera_id
        self.known = known
        super().__init__(camera_id)

    def __str__(self) -> str:
        known = ", ".join(self.known) or "(none)"
        return f"unknown camera {self.camera_id!r}; the registry lists: {known}"


class CameraRole(StrEnum):
    """What a camera's images are for; the one list of camera roles (a new camera type is a member here)."""

    hr_reference = "hr_reference"
    field_lr = "field_lr"


DEFAULT_MIN_FIELD_IMAGES = 8


class CameraModelChoice(BaseModel):
    """A field camera's own choices for its camera model G, over the training profile's
    (``colearn.downsampler`` and the matching loss weights); unset fields keep the profile's.
    Checked against the profile when the camera's co-learning starts (``Profile.for_camera``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    blur_model: str | None = Field(
        default=None, description="residual (a network's residual on bicubic downsampling) or kernel (a learned "
        "anisotropic Gaussian that can only blur, so all grain comes from the noise: for grainy cameras)")
    colour_transform: bool | None = Field(
        default=None, description="learn a colour matrix and offset: only where the reference and field "
        "cameras photograph the same kind of scenes, or a difference in content is learned as a cast")
    jpeg_stage: bool | None = Field(
        default=None, description="compress G's LR with the encoder settings read from this camera's JPEG uploads "
        "(the profiles leave it off: measured in docs/camera_model.md; never where the uploads were re-encoded by "
        "something other than the camera)")
    colour_match: float | None = Field(default=None, ge=0, description="weight of the colour-statistics term "
                                       "(default 1.0 where this camera turns colour_transform on)")
    noise_match: float | None = Field(default=None, ge=0, description="weight of the flat-region noise term")
    noise_fit_every: int | None = Field(
        default=None, ge=0, description="every N co-learning steps, set G's noise level by a direct search against "
        "this camera's flat-region noise (colearn.noise_fit_every; 0 off): for a kernel blur model, whose grain all "
        "comes from the noise (measured in docs/camera_model.md)")


class Camera(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: CameraRole
    scale: int = Field(default=4, ge=1, le=16)
    description: str = ""
    # Field cameras only: each one gets its own camera model and student (a Dagster partition).
    min_field_images: int = Field(
        default=DEFAULT_MIN_FIELD_IMAGES, ge=1,
        description="co-learning refuses to train this camera's model on fewer unpaired field images")
    fallback_camera: str | None = Field(
        default=None,
        description="another field camera whose promoted student upscales this camera's images while this "
        "one has none of its own (never used unless set)")
    camera_model: CameraModelChoice | None = Field(
        default=None, description="field cameras only: this camera's choices for its camera model G over the "
        "training profile's (configs/cameras.yaml explains when to use which)")
    fit_pairs: StrictInt | list[str] = Field(  # StrictInt: YAML's true/yes is not a count of 1
        default=0, description="field cameras only: which of its calibration pairs fit its camera model G "
        "instead of gating its student: a count N (the first N pair names in sorted order) or a list of pair "
        "names; the other pairs gate. 0: none (G learns from the unpaired field images alone)")

    @field_validator("fit_pairs")
    @classmethod
    def _check_fit_pairs(cls, fit: int | list[str]) -> int | list[str]:
        if isinstance(fit, int) and fit < 0:
            raise ValueError("fit_pairs must be a count >= 0 or a list of pair names")
        if isinstance(fit, list) and len(set(fit)) != len(fit):
            raise ValueError("fit_pairs lists a pair name twice")
        return fit

    def split_pairs(self, names: list[str]) -> tuple[list[str], list[str]]:
        """(fit, gate): this camera's calibration pair names split by ``fit_pairs``; a pair is in one or the
        other, never both. A listed fit pair not among ``names`` (not uploaded yet) is simply absent.
        ValueError when no gate pair would remain (a camera with fit pairs must keep one to gate its student)."""
        names = sorted(set(names))
        if isinstance(self.fit_pairs, int):
            fit = names[: self.fit_pairs] if self.fit_pairs else []
        else:
            fit = sorted(set(self.fit_pairs) & set(names))
        gate = [n for n in names if n not in set(fit)]
        if fit and not gate:
            raise ValueError(f"all {len(names)} calibration pairs would fit the camera model and none would gate "
                             "its student: upload more pairs or declare fewer fit_pairs")
        assert not set(fit) & set(gate)
        return fit, gate


class CameraRegistry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cameras: dict[str, Camera]

    @field_validator("cameras")
    @classmethod
    def _check_ids(cls, cameras: dict[str, Camera]) -> dict[str, Camera]:
        if not cameras:
            raise ValueError("the registry lists no cameras")
        for camera_id in cameras:
            if camera_id.lower() == RESERVED_CAMERA_ID:
                raise ValueError(f"camera id {camera_id!r} is reserved: consistency thresholds fitted on every "
                                 "camera's pairs, and promotions made before cameras were recorded, are listed as "
                                 f"{RESERVED_CAMERA_ID!r}; name the camera otherwise")
            if not CAMERA_ID_RE.match(camera_id):
                raise ValueError(
                    f"camera id {camera_id!r} must be 1-63 letters, digits, '_' or '-', starting with a letter or digit"
                )
        for camera_id, cam in cameras.items():
            if cam.camera_model is not None and cam.role != CameraRole.field_lr:
                raise ValueError(f"camera {camera_id!r}: camera_model is for field_lr cameras only")
            if cam.fit_pairs and cam.role != CameraRole.field_lr:
                raise ValueError(f"camera {camera_id!r}: fit_pairs is for field_lr cameras only")
            fallback = cam.fallback_camera
            if fallback is None:
                continue
            if cam.role != CameraRole.field_lr:
                raise ValueError(f"camera {camera_id!r}: fallback_camera is for field_lr cameras only")
            if fallback == camera_id:
                raise ValueError(f"camera {camera_id!r}: fallback_camera cannot be the camera itself")
            if fallback not in cameras or cameras[fallback].role != CameraRole.field_lr:
                raise ValueError(f"camera {camera_id!r}: fallback_camera {fallback!r} is not a field_lr camera "
                                 "of this registry")
            if cameras[fallback].scale != cam.scale:
                raise ValueError(f"camera {camera_id!r}: fallback_camera {fallback!r} has scale "
                                 f"{cameras[fallback].scale}, this camera {cam.scale}")
        return cameras

    def get(self, camera_id: str) -> Camera:
        try:
            return self.cameras[camera_id]
        except KeyError:
            raise UnknownCameraError(camera_id, sorted(self.cameras)) from None

    def camera_model_choice(self, camera_id: str) -> dict:
        """The camera's own camera-model choices (``camera_model``), only the fields it sets; {} for none."""
        choice = self.get(camera_id).camera_model
        return choice.model_dump(exclude_none=True) if choice is not None else {}

    def split_pairs(self, camera_id: str, names: list[str]) -> tuple[list[str], list[str]]:
        """(fit, gate) names of one camera's calibration pairs (``Camera.split_pairs``); a camera the
        registry does not list has no fit pairs."""
        cam = self.cameras.get(camera_id)
        return cam.split_pairs(names) if cam is not None else ([], sorted(set(names)))

    def __contains__(self, camera_id: object) -> bool:
        return camera_id in self.cameras

    def ids(self, role: CameraRole | str | None = None) -> list[str]:
        """Camera ids, sorted; only those with ``role`` when given."""
        role = CameraRole(role) if role is not None else None
        return sorted(cid for cid, cam in self.cameras.items() if role is None or cam.role == role)


def default_cameras_file() -> Path:
    from sr_pipeline.common.env_settings import env_path

    return Path(env_path("SR_PIPELINE_CAMERAS", DEFAULT_CAMERAS_FILE)).resolve()


def load_registry(path: str | Path | None = None) -> CameraRegistry:
    """Read and validate a registry file (default: :func:`default_cameras_file`)."""
    path = Path(path) if path is not None else default_cameras_file()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CameraRegistryError(f"camera registry {path} does not exist") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CameraRegistryError(f"cannot read camera registry {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise CameraRegistryError(f"camera registry {path} must be a mapping with a 'cameras' key")
    try:
        return CameraRegistry.model_validate(raw)
    except ValidationError as exc:
        raise CameraRegistryError(f"invalid camera registry {path}:\n{exc}") from None
