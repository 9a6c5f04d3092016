"""Every training profile shipped in configs/ loads, validates and is what its file name says."""
from __future__ import annotations

from pathlib import Path

import pytest

from sr_pipeline.sr.train.profile import Profile

REPO = Path(__file__).resolve().parents[3]
PROFILES = sorted(p for p in (REPO / "configs").rglob("*.yaml") if p.name != "cameras.yaml")


def _changed(base: dict, other: dict, prefix: str = "") -> set[str]:
    """Dotted keys whose values differ between two profile mappings."""
    keys = set(base) | set(other)
    out: set[str] = set()
    for k in keys:
        a, b = base.get(k), other.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out |= _changed(a, b, f"{prefix}{k}.")
        elif a != b:
            out.add(prefix + k)
    return out


def test_the_shipped_profiles_are_found():
    names = {p.relative_to(REPO / "configs").as_posix() for p in PROFILES}
    assert {"cpu-demo.yaml", "bench-cpu.yaml", "gpu.yaml", "sizes/bench-cpu-3m.yaml"} <= names


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.relative_to(REPO / "configs").as_posix())
def test_each_profile_validates_and_is_named_after_its_file(path):
    profile = Profile.from_yaml(path)
    assert profile.name == path.stem


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "sizes").glob("*.yaml")), ids=lambda p: p.stem)
def test_a_size_profile_changes_only_the_network(path):
    base = Profile.from_yaml(REPO / "configs" / "bench-cpu.yaml").to_dict()
    assert _changed(base, Profile.from_yaml(path).to_dict()) - {"name"} <= {
        "net.block_out_channels", "net.layers_per_block", "net.norm_num_groups"}


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("bench-cpu-*.yaml")), ids=lambda p: p.stem)
def test_a_preset_changes_only_loss_weights_or_its_own_teacher(path):
    """The fidelity and perceptual presets are bench-cpu's networks and co-learning: only the co-learning loss
    weights, the diffusion's kappa (the teacher's start noise) and, for a preset that trains its own teacher,
    that teacher's length (and how often it saves and logs) may differ."""
    base = Profile.from_yaml(REPO / "configs" / "bench-cpu.yaml").to_dict()
    changed = _changed(base, Profile.from_yaml(path).to_dict()) - {"name"}
    own_teacher = "diffusion.kappa" in changed
    teacher_length = {"teacher.steps", "teacher.save_every", "teacher.log_every"}
    assert changed and all(key.startswith("colearn.weights.") or key == "diffusion.kappa"
                           or (own_teacher and key in teacher_length) for key in changed)


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.relative_to(REPO / "configs").as_posix())
def test_each_shipped_camera_model_choice_fits_each_profile(path):
    """configs/cameras.yaml's per-camera camera_model choices must train with whichever profile is chosen."""
    from sr_pipeline.common.cameras import CameraRole, load_registry

    registry = load_registry(REPO / "configs" / "cameras.yaml")
    profile = Profile.from_yaml(path)
    for camera in registry.ids(CameraRole.field_lr):
        choice = registry.camera_model_choice(camera)
        tuned = profile.for_camera(camera, choice).colearn
        for key in ("blur_model", "colour_transform", "jpeg_stage"):
            assert getattr(tuned.downsampler, key) == choice.get(key, getattr(profile.colearn.downsampler, key))
        assert tuned.noise_fit_every == choice.get("noise_fit_every", profile.colearn.noise_fit_every)


def test_a_camera_choice_overrides_only_the_camera_model():
    from sr_pipeline.sr.train.profile import ProfileError

    demo = Profile.from_yaml(REPO / "configs" / "cpu-demo.yaml")
    assert demo.for_camera("cam", {}) is demo and demo.for_camera("cam", None) is demo
    colour = demo.for_camera("cam", {"colour_transform": True})
    assert colour.colearn.downsampler.colour_transform and colour.colearn.weights.colour_match == 1.0  # else untrained
    assert _changed(demo.to_dict(), colour.to_dict()) == {"colearn.downsampler.colour_transform",
                                                           "colearn.weights.colour_match"}
    assert demo.for_camera("cam", {"colour_transform": True, "colour_match": 0.3}).colearn.weights.colour_match == 0.3
    kernel = demo.for_camera("cam", {"blur_model": "kernel", "noise_match": 2.0})
    assert _changed(demo.to_dict(), kernel.to_dict()) == {"colearn.downsampler.blur_model", "colearn.weights.noise_match"}
    assert not demo.colearn.downsampler.jpeg_stage  # off in the profiles (measured), chosen per camera
    jpeg = demo.for_camera("cam", {"jpeg_stage": True})
    assert _changed(demo.to_dict(), jpeg.to_dict()) == {"colearn.downsampler.jpeg_stage"}
    assert demo.colearn.noise_fit_every == 0  # off in the profiles, chosen per camera
    fitted = demo.for_camera("cam", {"blur_model": "kernel", "noise_fit_every": 50})
    assert _changed(demo.to_dict(), fitted.to_dict()) == {"colearn.downsampler.blur_model", "colearn.noise_fit_every"}
    assert fitted.colearn.fits_noise_level
    with pytest.raises(ProfileError, match="(?s)camera 'cam'.*blur_model"):
        demo.for_camera("cam", {"blur_model": "gaussian"})


@pytest.mark.parametrize("choice", [{}, {"blur_model": "kernel", "noise_fit_every": 50},
                                    {"colour_transform": True, "jpeg_stage": True}], ids=["profile", "kernel", "jpeg"])
def test_every_bench_quality_ablation_exists_for_each_profile_and_camera_choice(choice, load_benchmark):
    """bench_quality trains the ablations after the co-learned student: one that cannot be built (the first
    design has no kernel blur) must not surface 20 minutes into a run."""
    bench = load_benchmark("bench_quality")
    for path in PROFILES:
        profile = Profile.from_yaml(path).for_camera("cam", choice)
        for name in bench.ABLATIONS:
            assert bench._ablation(profile, name).name.endswith(name)
