"""The unpaired blur estimate on synthetic cameras of known blur: it ranks blur and ignores scene detail."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from sr_pipeline.sr.judge.blur_estimate import blur_down, edge_ratios, estimate_blur_sigma

SCALE = 4
HR = 512


def scene(detailed: bool, seed: int) -> np.ndarray:
    """A grey HR scene (0-255 float): smooth shading under rectangles at random angles, many small ones
    (detailed) or a few large ones (smooth). Not the calibration's dead-leaves discs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:HR, 0:HR] / HR
    shading = 40.0 * np.sin(2 * np.pi * (yy * rng.random() + xx * rng.random()))
    canvas = Image.new("L", (HR, HR), 128)
    draw = ImageDraw.Draw(canvas)
    count, lo, hi = (400, 4, 40) if detailed else (8, 100, 220)
    for _ in range(count):
        h, w = rng.uniform(lo, hi, 2)
        cy, cx = rng.uniform(0, HR, 2)
        a = rng.uniform(0, np.pi)
        corners = [(cx + u * np.cos(a) - v * np.sin(a), cy + u * np.sin(a) + v * np.cos(a))
                   for u, v in ((-w, -h), (w, -h), (w, h), (-w, h))]
        draw.polygon([(x / 2, y / 2) for x, y in corners], fill=int(rng.integers(30, 226)))
    return np.asarray(canvas, dtype=np.float64) + shading


def camera(scenes: list[np.ndarray], sigma: float) -> list[np.ndarray]:
    """The LR images (uint8 grey) of a camera that blurs by ``sigma`` HR pixels, then bicubic-down x4."""
    return [np.clip(np.rint(blur_down(s, sigma, SCALE)), 0, 255).astype(np.uint8) for s in scenes]


def laplacian_energy(img: np.ndarray) -> float:
    return float(np.mean(ndimage.laplace(np.asarray(img, dtype=np.float64)) ** 2))


@pytest.fixture(scope="module")
def scenes() -> dict[str, list[np.ndarray]]:
    return {"smooth": [scene(False, s) for s in range(4)], "detailed": [scene(True, 10 + s) for s in range(4)]}


@pytest.fixture(scope="module")
def estimates(scenes) -> dict[tuple[str, float], float]:
    return {(kind, sigma): estimate_blur_sigma(camera(imgs, sigma), SCALE).sigma
            for kind, imgs in scenes.items() for sigma in (0.5, 1.5, 2.5)}


@pytest.mark.parametrize("kind", ["smooth", "detailed"])
def test_ranks_the_blur(estimates, kind):
    assert estimates[kind, 0.5] < estimates[kind, 1.5] < estimates[kind, 2.5]


@pytest.mark.parametrize("sigma", [0.5, 1.5, 2.5])
def test_scene_detail_is_not_read_as_blur(scenes, estimates, sigma):
    # The high band (what unpaired matching compares) differs several times between the two kinds of scene
    # at the same blur; the estimate moves little.
    energy = {k: np.mean([laplacian_energy(im) for im in camera(imgs, sigma)]) for k, imgs in scenes.items()}
    assert energy["detailed"] > 3 * energy["smooth"]
    assert abs(estimates["smooth", sigma] - estimates["detailed", sigma]) < 0.5


@pytest.mark.parametrize("sigma", [1.5, 2.5])
def test_recovers_the_blur_of_a_sharp_scene(estimates, sigma):
    for kind in ("smooth", "detailed"):
        assert estimates[kind, sigma] == pytest.approx(sigma, abs=0.4)


def test_relative_to_blurred_references_is_what_they_lack(scenes):
    # References that already blur by 1.0 HR px need sqrt(2.5^2 - 1^2) = 2.29 more to look like the camera.
    imgs = scenes["detailed"]
    refs = [ndimage.gaussian_filter(s, 1.0) for s in scenes["smooth"] + imgs[:2]]
    est = estimate_blur_sigma(camera(imgs, 2.5), SCALE, references=refs)
    assert est.reference == pytest.approx(1.0, abs=0.4)
    assert est.sigma == pytest.approx(np.sqrt(2.5 ** 2 - 1.0), abs=0.4)
    assert est.sigma < est.absolute
    assert est.low <= est.sigma <= est.high
    assert est.images == len(imgs) and est.edges > 100 and not est.saturated


def test_colour_and_grey_images_read_the_same(scenes):
    grey = camera(scenes["detailed"][:2], 1.5)
    rgb = [np.repeat(g[..., None], 3, axis=-1) for g in grey]
    assert estimate_blur_sigma(rgb, SCALE).sigma == pytest.approx(estimate_blur_sigma(grey, SCALE).sigma)


def test_a_sharper_camera_than_the_references_needs_no_blur(scenes):
    imgs = scenes["detailed"][:2]
    est = estimate_blur_sigma(camera(imgs, 0.0), SCALE, references=[ndimage.gaussian_filter(s, 2.0) for s in imgs])
    assert est.sigma == 0.0 and est.absolute < est.reference


def test_step_edge_ratio_falls_with_blur():
    step = np.zeros((64, 64))
    step[:, 32:] = 200.0
    sharp, blurred = edge_ratios(step), edge_ratios(ndimage.gaussian_filter(step, 1.5))
    assert sharp.size and blurred.size
    assert np.median(blurred) < np.median(sharp) <= 2.0


def test_flat_images_and_no_images_are_refused():
    with pytest.raises(ValueError, match="edge points"):
        estimate_blur_sigma([np.full((64, 64, 3), 90, np.uint8)], SCALE)
    with pytest.raises(ValueError, match="no LR images"):
        estimate_blur_sigma([], SCALE)
    with pytest.raises(ValueError, match="HxW"):
        estimate_blur_sigma([np.zeros((8, 8, 4))], SCALE)
