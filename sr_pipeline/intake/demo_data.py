"""The bundled demo data: camera uploads made from scikit-image's bundled public-domain photos.

``make_demo_data`` writes into the landing folder exactly what real cameras would upload:

- ``landing/ref_cam/``: HR reference crops (PNG) from the high-resolution reference camera;
- ``landing/<field camera>/``: unpaired field images (JPEG) from two simulated field cameras, each
  with its own fixed degradation that the models are never told (:func:`field_camera_jpeg`):
  ``field_cam``, an old colour camera (anisotropic blur, a warm colour cast, moderate noise, JPEG 70),
  and ``grey_cam``, a grainy monochrome camera (sharp optics, strong signal-dependent noise, JPEG 85);
- ``landing/<field camera>/pairs/<name>/{hr,lr}/``: a small paired calibration set per camera, the
  HR crop and that camera's image of it, for evaluation only (the gate pairs);
- ``landing/<field camera>/pairs/fit-<n>/{hr,lr}/``: :data:`N_FIT_PAIRS` more registered pairs per camera,
  which ``configs/cameras.yaml`` declares as the camera's ``fit_pairs``: they pin its camera model G in
  co-learning and never gate a student.

The three roles (references, field images, gate pairs) come from disjoint tiles of the photos (a tile is
used by one role only), so nothing in the gate pairs or the field images was ever an HR reference and no
gate pair shows a scene anything trained on. The fit pairs are registered shots of scenes the field camera
also photographed (other crops of its field tiles): they train, as its field images do, and never gate. Everything is
deterministic for a seed. A manifest ``landing/.demo-data.json`` records what was written (hidden,
so the upload sensor ignores it) and makes a second call a no-op unless ``force``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from sr_pipeline.common.cameras import CameraRole
from sr_pipeline.sr.images.png_stream import LUMA
from sr_pipeline.common.atomic import atomic_write
from sr_pipeline.storage.layout import DataLayout

REF_CAMERA = "ref_cam"
FIELD_CAMERA = "field_cam"
GREY_CAMERA = "grey_cam"
MANIFEST_NAME = ".demo-data.json"
TILE = 160
MAX_TILES_PER_PHOTO = 9  # keeps the big, smooth photos (retina, Hubble) from dominating
N_REFERENCES = 20
N_FIELD = 36
N_PAIRS = 8
# The second camera gets what is left of the 92 usable tiles (the first camera keeps its tiles for a seed).
N_GREY_FIELD = 20
N_GREY_PAIRS = 6
# Registered pairs per field camera that fit its camera model G (configs/cameras.yaml: fit_pairs), on top of the
# gate pairs above, named fit-1, fit-2, ... whatever the seed. Drawn from the camera's field tiles (the tiles are
# all in use) with their own random stream, so every other demo file is the same as without them.
N_FIT_PAIRS = 5  # paired_fit.min_pairs: with 1-2, RealSR Canon's student scored below the unpaired one
FIT_PAIR_SIZE = TILE

# skimage.data loaders used, each bundled with scikit-image 0.26 (nothing is downloaded), and
# the licence its docstring states (see data/README.md).
PHOTOS: dict[str, str] = {
    "astronaut": "public domain (NASA)",
    "brick": "CC0 (CC0Textures)",
    "camera": "CC0 (Lav Varshney)",
    "cell": "CC0",
    "chelsea": "CC0 (Stefan van der Walt)",
    "coffee": "CC0 (Rachel Michetti)",
    "coins": "no known copyright restrictions (Brooklyn Museum)",
    "grass": "CC0 (DeviantArt, linolafett)",
    "gravel": "CC0 (CC0Textures)",
    "hubble_deep_field": "public domain (NASA)",
    "immunohistochemistry": "no known copyright restrictions (CMMI)",
    "retina": "CC0 (Mikael Häggström, Wikimedia Commons)",
    "rocket": "public domain (SpaceX)",
}


@dataclass(frozen=True)
class FieldCameraModel:
    """The simulated field camera. Fixed: the models never see these numbers."""

    scale: int = 4
    blur_sigmas: tuple[float, float] = (1.6, 0.7)  # HR pixels, along the major and minor axis
    blur_angle_deg: float = 25.0
    read_noise: float = 2.0  # 8-bit levels
    shot_noise: float = 0.06  # variance per level of signal
    colour_gain: tuple[float, float, float] = (1.06, 1.0, 0.9)  # a warm cast
    colour_offset: float = 4.0  # lifted blacks
    jpeg_quality: int = 70
    grey: bool = False  # a monochrome sensor: one luma value per pixel, stored as a greyscale JPEG


FIELD_CAMERA_MODEL = FieldCameraModel()
GREY_CAMERA_MODEL = FieldCameraModel(blur_sigmas=(0.8, 0.8), blur_angle_deg=0.0, read_noise=4.0, shot_noise=0.12,
                                     colour_gain=(1.0, 1.0, 1.0), colour_offset=0.0, jpeg_quality=85, grey=True)
CAMERA_MODELS = {FIELD_CAMERA: FIELD_CAMERA_MODEL, GREY_CAMERA: GREY_CAMERA_MODEL}


def anisotropic_gaussian_kernel(sigmas: tuple[float, float], angle_deg: float) -> np.ndarray:
    radius = int(np.ceil(3 * max(sigmas)))
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1].astype(np.float64)
    theta = np.deg2rad(angle_deg)
    u = np.cos(theta) * x + np.sin(theta) * y
    v = -np.sin(theta) * x + np.cos(theta) * y
    kernel = np.exp(-0.5 * ((u / sigmas[0]) ** 2 + (v / sigmas[1]) ** 2))
    return kernel / kernel.sum()


def _seed_for(seed: int, name: str) -> np.random.Generator:
    digest = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, digest])


def field_camera_response(hr: np.ndarray, model: FieldCameraModel = FIELD_CAMERA_MODEL) -> np.ndarray:
    """The simulated camera's deterministic part for an HxWx3 uint8 scene, unrounded float at 1/scale:
    blur (anisotropic Gaussian) -> area downsampling -> colour cast (a grey camera: luma, HxW). H and W
    must be multiples of the scale. (The best any deterministic camera model could match.)"""
    s = model.scale
    h, w = hr.shape[:2]
    if h % s or w % s:
        raise ValueError(f"scene size {w}x{h} is not a multiple of the scale {s}")
    x = hr.astype(np.float64)
    kernel = anisotropic_gaussian_kernel(model.blur_sigmas, model.blur_angle_deg)
    x = np.stack([ndimage.convolve(x[..., c], kernel, mode="reflect") for c in range(3)], axis=-1)
    x = x.reshape(h // s, s, w // s, s, 3).mean(axis=(1, 3))
    x = x * np.asarray(model.colour_gain) + model.colour_offset
    if model.grey:
        x = x @ LUMA.astype(np.float64)
    return x


def field_camera_jpeg(hr: np.ndarray, seed: int, name: str = "", model: FieldCameraModel = FIELD_CAMERA_MODEL) -> bytes:
    """What the simulated field camera uploads for an HxWx3 uint8 scene: JPEG bytes at 1/scale.

    Blur (anisotropic Gaussian) -> area downsampling -> colour cast (a grey camera: luma) ->
    signal-dependent noise -> 8-bit quantisation -> JPEG. ``seed`` and ``name`` fix the noise. H and
    W must be multiples of the scale.
    """
    x = field_camera_response(hr, model)
    rng = _seed_for(seed, name)
    sigma = np.sqrt(model.read_noise**2 + model.shot_noise * np.clip(x, 0, None))
    x = x + rng.normal(size=x.shape) * sigma
    lr = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(lr, "L" if model.grey else "RGB").save(buf, format="JPEG", quality=model.jpeg_quality)
    return buf.getvalue()


def field_camera_degrade(hr: np.ndarray, seed: int, name: str = "", model: FieldCameraModel = FIELD_CAMERA_MODEL) -> np.ndarray:
    """:func:`field_camera_jpeg` decoded: the field image as HxWx3 uint8 (for evaluation)."""
    with Image.open(io.BytesIO(field_camera_jpeg(hr, seed, name, model))) as im:
        return np.asarray(im.convert("RGB"))


# ---------------------------------------------------------------- tiles and roles


@dataclass(frozen=True)
class Tile:
    photo: str
    row: int
    col: int
    top: int
    left: int

    @property
    def name(self) -> str:
        return f"{self.photo}_r{self.row}c{self.col}"


def load_photo(name: str) -> np.ndarray:
    """A bundled scikit-image photo as HxWx3 uint8 (grey photos repeated over 3 channels)."""
    import skimage.data

    image = np.asarray(getattr(skimage.data, name)())
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3]).astype(np.uint8)


def photo_tiles(name: str, image: np.ndarray) -> list[Tile]:
    """Non-overlapping TILE x TILE tiles on a centred grid, without near-empty ones (retina's and
    the Hubble field's black surroundings); at most MAX_TILES_PER_PHOTO, the most textured."""
    h, w = image.shape[:2]
    rows, cols = h // TILE, w // TILE
    top0, left0 = (h - rows * TILE) // 2, (w - cols * TILE) // 2
    tiles = []
    for r in range(rows):
        for c in range(cols):
            top, left = top0 + r * TILE, left0 + c * TILE
            patch = image[top : top + TILE, left : left + TILE].astype(np.float64)
            if patch.std() >= 12.0 and 20.0 <= patch.mean() <= 235.0:
                tiles.append((patch.std(), Tile(name, r, c, top, left)))
    tiles.sort(key=lambda st: -st[0])
    return sorted((t for _, t in tiles[:MAX_TILES_PER_PHOTO]), key=lambda t: (t.row, t.col))


def assign_roles(tiles_by_photo: dict[str, list[Tile]], seed: int) -> dict[str, list[Tile]]:
    """Disjoint tiles for each role, spread over the photos (round-robin over shuffled photos)."""
    rng = np.random.default_rng(seed)
    queues = {p: [ts[i] for i in rng.permutation(len(ts))] for p, ts in sorted(tiles_by_photo.items())}
    order: list[Tile] = []
    while any(queues.values()):
        photos = [p for p in sorted(queues) if queues[p]]
        for i in rng.permutation(len(photos)):
            order.append(queues[photos[i]].pop())
    need = N_PAIRS + N_REFERENCES + N_FIELD
    grey_need = N_GREY_PAIRS + N_GREY_FIELD
    if len(order) < need + grey_need:
        raise RuntimeError(f"only {len(order)} usable tiles, the demo needs {need + grey_need}")
    roles: dict[str, list[Tile]] = {"calibration": order[:N_PAIRS], "reference": [], "field": []}
    # interleave the rest so both training roles see every photo
    for tile in order[N_PAIRS:need]:
        want_field = len(roles["field"]) * N_REFERENCES <= len(roles["reference"]) * N_FIELD
        key = "field" if (want_field and len(roles["field"]) < N_FIELD) or len(roles["reference"]) >= N_REFERENCES else "reference"
        roles[key].append(tile)
    roles["grey_calibration"] = order[need:need + N_GREY_PAIRS]
    roles["grey_field"] = order[need + N_GREY_PAIRS:need + grey_need]
    return roles


def _crop(image: np.ndarray, tile: Tile, size: int, rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    dy, dx = (int(v) for v in rng.integers(0, TILE - size + 1, size=2))
    top, left = tile.top + dy, tile.left + dx
    return image[top : top + size, left : left + size], [top, left, size, size]


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, "RGB").save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------- writing


@dataclass
class DemoData:
    landing: Path
    seed: int
    skipped: bool = False
    files: list[dict] = field(default_factory=list)
    """One entry per written file: path (relative to landing), role, photo, box [top, left, h, w]; a fit pair's
    two files also carry ``use: fit``."""

    def count(self, role: str) -> int:
        return sum(1 for f in self.files if f["role"] == role)


def make_demo_data(layout: DataLayout, seed: int = 0, force: bool = False) -> DemoData:
    """Write the demo uploads into ``layout.landing`` (see the module doc)."""
    manifest_path = layout.landing / MANIFEST_NAME
    if manifest_path.exists() and not force:
        previous = json.loads(manifest_path.read_text())
        return DemoData(layout.landing, previous.get("seed", seed), skipped=True, files=previous.get("files", []))
    if manifest_path.exists():  # force: remove what the previous call wrote and is still waiting
        for entry in json.loads(manifest_path.read_text()).get("files", []):
            try:
                os.unlink(layout.landing / entry["path"])
            except FileNotFoundError:
                pass

    photos = {name: load_photo(name) for name in PHOTOS}
    roles = assign_roles({name: photo_tiles(name, img) for name, img in photos.items()}, seed)
    rng = np.random.default_rng([seed, 1])
    out = DemoData(layout.landing, seed)

    def write(rel: str, data: bytes, role: str, tile: Tile, box: list[int], use: str | None = None) -> None:
        atomic_write(layout.landing / rel, data, durable=False)
        out.files.append({"path": rel, "role": role, "photo": tile.photo, "box": box} | ({"use": use} if use else {}))

    for tile in roles["reference"]:
        size = int(rng.choice([128, 144, 160]))
        crop, box = _crop(photos[tile.photo], tile, size, rng)
        write(f"{REF_CAMERA}/{tile.name}.png", _png(crop), CameraRole.hr_reference, tile, box)
    for camera, prefix in ((FIELD_CAMERA, ""), (GREY_CAMERA, "grey_")):
        model = CAMERA_MODELS[camera]
        for tile in roles[f"{prefix}field"]:
            size = int(rng.choice([144, 160]))
            crop, box = _crop(photos[tile.photo], tile, size, rng)
            write(f"{camera}/{tile.name}.jpg", field_camera_jpeg(crop, seed, tile.name, model), CameraRole.field_lr,
                  tile, box)
        for tile in roles[f"{prefix}calibration"]:
            size = int(rng.choice([128, 144, 160]))
            crop, box = _crop(photos[tile.photo], tile, size, rng)
            base = f"{camera}/pairs/{tile.name}"
            write(f"{base}/hr/{tile.name}.png", _png(crop), "calib_hr", tile, box)
            write(f"{base}/lr/{tile.name}.jpg", field_camera_jpeg(crop, seed, tile.name, model), "calib_lr", tile, box)
    for index, camera in enumerate(CAMERA_MODELS):
        model, prefix = CAMERA_MODELS[camera], "" if camera == FIELD_CAMERA else "grey_"
        fit_rng = np.random.default_rng([seed, 2, index])
        for n, tile in enumerate(roles[f"{prefix}field"][:N_FIT_PAIRS], start=1):
            crop, box = _crop(photos[tile.photo], tile, FIT_PAIR_SIZE, fit_rng)
            name = f"fit-{n}"
            base = f"{camera}/pairs/{name}"
            write(f"{base}/hr/{name}.png", _png(crop), "calib_hr", tile, box, "fit")
            write(f"{base}/lr/{name}.jpg", field_camera_jpeg(crop, seed, f"{camera}/{name}", model), "calib_lr", tile,
                  box, "fit")

    manifest = {
        "seed": seed,
        "field_camera_models": {camera: asdict(model) for camera, model in CAMERA_MODELS.items()},
        "photo_licences": {name: PHOTOS[name] for name in sorted({f["photo"] for f in out.files})},
        "files": out.files,
    }
    atomic_write(manifest_path, json.dumps(manifest, indent=2).encode())
    return out


def run_cli(args: argparse.Namespace) -> int:
    """``sr-pipeline demo-data [--seed N] [--force]``."""
    layout = args.layout
    result = make_demo_data(layout, seed=getattr(args, "seed", 0), force=getattr(args, "force", False))
    if result.skipped:
        print(f"demo uploads already written to {result.landing} (seed {result.seed}); use --force to write them again")
        return 0
    def of(camera: str, role: str) -> int:
        return sum(1 for f in result.files if f["role"] == role and f["path"].startswith(f"{camera}/"))

    def fit(camera: str) -> int:
        return sum(1 for f in result.files if f["role"] == "calib_hr" and f.get("use") == "fit"
                   and f["path"].startswith(f"{camera}/"))

    cameras = ", ".join(f"{of(c, CameraRole.field_lr)} field images and {of(c, 'calib_hr')} calibration pairs "
                        f"({fit(c)} to fit its camera model) in {c}/" for c in CAMERA_MODELS)
    print(f"wrote demo camera uploads to {result.landing} (seed {result.seed}): "
          f"{result.count(CameraRole.hr_reference)} HR references in {REF_CAMERA}/, {cameras}")
    return 0
