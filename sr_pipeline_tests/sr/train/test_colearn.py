"""Co-learning: each update touches exactly the nets it should and moves them the right way, the
teacher never changes, loss switches skip their work, a tiny run writes both model folders,
resumes bit-identically, and stops on a NaN."""

import hashlib
import json

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from conftest import photos, tiny_sr_model
from sr_pipeline.sr.models.checkpoints import load_sr_model
from sr_pipeline.sr.train.profile import (
    ColearnConfig,
    DiffusionConfig,
    DiscriminatorConfig,
    DownsamplerConfig,
    LossWeights,
    NetConfig,
    OptimConfig,
    Profile,
)
from sr_pipeline.sr.models.downsampler import load_downsampler
from sr_pipeline.sr.images.tensors import downsample
from sr_pipeline.sr.train.losses import l1, lowpass
from sr_pipeline.sr.train.stages import colearn as tc
from sr_pipeline.sr.train.loop import UnfinishedRun, latest_state, run_stage, saved_record
from sr_pipeline.sr.train.shared import TrainingDiverged

TINY_NET = NetConfig(block_out_channels=(8, 16), attention_levels=(False, False), norm_num_groups=4)
ALL_ON = dict(rec=1.0, lpips=0.0, distill=1.0, adv_hr=0.1, adv_lr=0.1, struct=1.0, cyc_lr=1.0,
              inverse=0.1, consistency=0.1)


def tiny_profile(weights=None, train=None, **colearn) -> Profile:
    opts = dict(steps=4, batch_size=2, patch_size=32, lr=1e-3, warmup_steps=1, save_every=2, log_every=1,
                ema_decay=0.9)
    opts.update(train or {})
    cfg = dict(train=OptimConfig(**opts), weights=LossWeights(**{**ALL_ON, **(weights or {})}), teacher_steps=2,
               downsampler=DownsamplerConfig(channels=8, num_blocks=1, norm_num_groups=4),
               d_hr=DiscriminatorConfig(base_channels=8, num_downsamples=2),
               d_lr=DiscriminatorConfig(base_channels=8, num_downsamples=1))
    cfg.update(colearn)
    return Profile(name="tiny", net=TINY_NET, diffusion=DiffusionConfig(num_steps=4, kappa=1.0),
                   colearn=ColearnConfig(**cfg))


def field_lr(n=3, size=16, seed=5):
    rng = np.random.default_rng(seed)
    return [np.clip(p.astype(float)[::3, ::3][:size, :size] + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
            for p in photos(n, 48, seed)]


def make_teacher(tmp_path):
    # Only the output layer perturbed (the rest as initialised): not the identity, so sampling matters.
    return tiny_sr_model(tmp_path / "models" / "teacher" / "t1", {"kind": "teacher", "version": "t1"},
                         perturb=lambda net: torch.nn.init.normal_(net.unet.conv_out.weight, std=0.02))


def learner_for(tmp_path, profile):
    teacher = load_sr_model(make_teacher(tmp_path))
    return tc.CoLearner(profile, teacher.net, teacher.schedule, Accelerator(cpu=True))


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, 32, 32, generator=g) * 2 - 1, torch.rand(2, 3, 8, 8, generator=g) * 2 - 1


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(model, snap):
    state = model.state_dict()
    return set(state) == set(snap) and all(torch.equal(state[k], snap[k]) for k in snap)


def grads_nonzero(model) -> bool:
    """Every trainable weight got a gradient and they are not all zero (an all-zero gradient fails)."""
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    return bool(grads) and all(g is not None for g in grads) and any(bool(g.abs().sum() > 0) for g in grads)


def no_grads(model) -> bool:
    return all(p.grad is None for p in model.parameters())


def only(*terms):
    return {k: 0.0 for k in ALL_ON} | {t: 1.0 for t in terms}


def test_discriminator_step_updates_only_the_discriminators(tmp_path):
    learner = learner_for(tmp_path, tiny_profile())
    x, y_r = batch()
    gen = learner.generate(x)
    before = {n: snapshot(m) for n, m in [("teacher", learner.teacher), ("d_hr", learner.d_hr), ("d_lr", learner.d_lr)]}
    row = learner.discriminator_step(x, y_r, gen, 1)
    assert {"loss_d_hr", "loss_d_lr", "acc_d_hr", "acc_d_lr"} <= set(row)
    # The fakes are detached: no gradient reached U or G (a fresh learner has none of its own).
    assert no_grads(learner.student) and no_grads(learner.downsampler)
    assert grads_nonzero(learner.d_hr) and grads_nonzero(learner.d_lr)
    assert same(learner.teacher, before["teacher"])
    assert not same(learner.d_hr, before["d_hr"]) and not same(learner.d_lr, before["d_lr"])


def test_generator_step_leaves_discriminators_and_teacher_unchanged(tmp_path):
    learner = learner_for(tmp_path, tiny_profile())
    x, y_r = batch()
    gen = learner.generate(x)
    learner.discriminator_step(x, y_r, gen, 1)
    before = {n: snapshot(m) for n, m in [("teacher", learner.teacher), ("d_hr", learner.d_hr), ("d_lr", learner.d_lr)]}
    for d in (learner.d_hr, learner.d_lr):
        d.zero_grad(set_to_none=True)
    row = learner.generator_step(x, y_r, gen, 1)
    assert {f"loss_{k}" for k, w in ALL_ON.items() if w > 0} <= set(row)
    assert same(learner.d_hr, before["d_hr"]) and same(learner.d_lr, before["d_lr"])
    assert no_grads(learner.d_hr) and no_grads(learner.d_lr)  # frozen: the adversarial terms left them alone
    assert same(learner.teacher, before["teacher"])
    assert grads_nonzero(learner.student) and grads_nonzero(learner.downsampler)
    assert all(p.requires_grad for p in learner.d_hr.parameters())  # the toggle is undone


def _struct_gap(learner, x):
    """L_struct of G's noise-free output: how far its low band is from the bicubic LR's."""
    sigma = learner.cfg.struct_sigma
    with torch.no_grad():
        return float(l1(lowpass(learner.unwrap(learner.downsampler)(x, None), sigma),
                        lowpass(downsample(x, 4), sigma)))


def test_struct_steps_move_g_towards_the_bicubic_low_band(tmp_path):
    learner = learner_for(tmp_path, tiny_profile(only("struct")))
    x, _ = batch()
    # Start G off its target (its residual starts near zero, i.e. already on the bicubic LR).
    with torch.no_grad():
        for p in learner.unwrap(learner.downsampler).conv_out.parameters():
            p.normal_(0, 0.2, generator=torch.Generator().manual_seed(1))
    before = _struct_gap(learner, x)
    for step in range(1, 6):
        learner.generator_step(x, None, learner.generate(x), step)
    assert _struct_gap(learner, x) < 0.9 * before


def test_lr_cycle_gradient_reaches_u_and_g_and_closes_the_cycle(tmp_path):
    learner = learner_for(tmp_path, tiny_profile(only("cyc_lr"), train={"lr": 3e-3}))
    x, y_r = batch()
    gen = learner.generate(x)

    def cycle_gap():
        torch.manual_seed(7)  # the same eps_r for each measurement
        with torch.no_grad():
            eps = torch.randn(2, 3, 32, 32) * learner.cfg.start_noise_scale
            x_r = tc.student_step(learner.student, learner.schedule, y_r, eps, 4)
            return float(l1(learner.downsampler(x_r, None), y_r))

    before = cycle_gap()
    learner.generator_step(x, y_r, gen, 1)
    assert grads_nonzero(learner.student) and grads_nonzero(learner.downsampler)
    for step in range(2, 8):
        learner.generator_step(x, y_r, gen, step)
    assert cycle_gap() < before


def test_student_and_its_ema_start_as_the_teacher(tmp_path):
    learner = learner_for(tmp_path, tiny_profile())
    teacher = snapshot(learner.teacher)
    assert same(learner.student, teacher) and same(learner.ema.model, teacher)
    assert learner.student is not learner.teacher


def test_teacher_label_and_student_see_the_same_eps(tmp_path, monkeypatch):
    learner = learner_for(tmp_path, tiny_profile(start_noise_scale=1.0))  # (the default 0 starts at the mean)
    seen = {}
    real_step, real_sample = tc.student_step, learner.schedule.sample

    def spy_step(net, schedule, y, eps, scale):
        seen.setdefault("student", eps.clone())
        return real_step(net, schedule, y, eps, scale)

    def spy_sample(model, up_y, noise, **kw):
        seen["teacher"] = noise.clone()
        return real_sample(model, up_y, noise, **kw)

    monkeypatch.setattr(tc, "student_step", spy_step)
    monkeypatch.setattr(learner.schedule, "sample", spy_sample)
    gen = learner.generate(batch()[0])
    assert torch.equal(seen["student"], seen["teacher"]) and torch.equal(seen["teacher"], gen["eps"])
    assert seen["teacher"].abs().sum() > 0


def test_a_few_dozen_steps_reduce_the_reconstruction_loss(tmp_path):
    learner = learner_for(tmp_path, tiny_profile(only("rec"), train={"lr": 3e-3, "warmup_steps": 1}))
    x, _ = batch()
    losses = [learner.generator_step(x, None, learner.generate(x), step)["loss_rec"] for step in range(1, 31)]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3])


@pytest.mark.parametrize("highpass", [True, False])
def test_d_lr_sees_only_the_high_band_under_frequency_separation(tmp_path, highpass):
    # A uniform colour cast lives entirely in L_struct's low band: with frequency separation D_LR's verdict
    # cannot change (G gains nothing by tinting the scene); with the full band it does.
    learner = learner_for(tmp_path, tiny_profile(d_lr_highpass=highpass))
    _, y = batch()
    tinted = y + torch.tensor([0.0, -0.2, 0.0]).view(1, 3, 1, 1)
    assert torch.allclose(learner.lr_band(tinted), learner.lr_band(y), atol=1e-5) == highpass
    d_lr = learner.unwrap(learner.d_lr).eval()
    with torch.no_grad():
        verdicts_equal = torch.allclose(d_lr(learner.lr_band(tinted)), d_lr(learner.lr_band(y)), atol=1e-5)
    assert verdicts_equal == highpass


def test_teacher_never_changes_over_iterations(tmp_path):
    learner = learner_for(tmp_path, tiny_profile())
    teacher = snapshot(learner.teacher)
    for i in range(3):
        x, y_r = batch(i)
        learner.iteration(x, y_r, None, i + 1)
    assert same(learner.teacher, teacher)
    assert not any(p.requires_grad for p in learner.teacher.parameters())
    student_params = {id(p) for g in learner.opt_gen.param_groups for p in g["params"]}
    assert not student_params & {id(p) for p in learner.teacher.parameters()}


def test_rec_gradient_reaches_the_downsampler_only_when_switched_on(tmp_path):
    for switch in (False, True):
        learner = learner_for(tmp_path / str(switch), tiny_profile(only("rec"), rec_grad_to_downsampler=switch))
        x, _ = batch()
        gen = learner.generate(x)
        g = snapshot(learner.downsampler)
        learner.generator_step(x, None, gen, 1)
        assert grads_nonzero(learner.student)
        assert grads_nonzero(learner.downsampler) is switch and no_grads(learner.downsampler) is not switch
        assert same(learner.downsampler, g) is not switch


def _count_calls(module):
    calls = []
    module.register_forward_hook(lambda *a: calls.append(1))
    return calls


def test_zero_weights_skip_the_networks_their_terms_need(tmp_path):
    on = learner_for(tmp_path / "on", tiny_profile())
    off = learner_for(tmp_path / "off", tiny_profile({"distill": 0.0, "inverse": 0.0, "cyc_lr": 0.0,
                                                      "consistency": 0.0, "adv_hr": 0.0}))
    assert off.d_hr is None and on.d_hr is not None
    x, y_r = batch()
    counts = {}
    for name, learner in (("on", on), ("off", off)):
        t_calls, s_calls, g_calls = (_count_calls(learner.teacher), _count_calls(learner.student),
                                     _count_calls(learner.downsampler))
        row = learner.iteration(x, y_r, None, 1)
        counts[name] = (len(t_calls), len(s_calls), len(g_calls), row)
    # teacher: 2 sampler steps; student: x_hat + cyc + inverse + 2 for consistency; G: y_hat + cyc
    assert counts["on"][:3] == (2, 5, 2)
    assert counts["off"][:3] == (0, 1, 1)
    assert "loss_distill" not in counts["off"][3] and "loss_cyc_lr" not in counts["off"][3]
    assert "teacher" not in off.timer.totals and on.timer.totals["teacher"] > 0


def _weights_hash(folder):
    return hashlib.sha256((folder / "diffusion_pytorch_model.safetensors").read_bytes()).hexdigest()


def outs(tmp_path, version="v1"):
    return tmp_path / "models" / "student" / version, tmp_path / "models" / "downsampler" / version


def test_tiny_run_writes_student_and_downsampler_folders(tmp_path):
    teacher_dir = make_teacher(tmp_path)
    teacher_hash = _weights_hash(teacher_dir)
    student_dir, g_dir = outs(tmp_path)
    stage = tc.ColearnStage(tiny_profile(), teacher_dir, photos(), field_lr(), student_dir, g_dir,
                            image_ids=["a", "b", "c"])
    result = run_stage(stage, tmp_path / "run")
    assert result is not None and result.steps == 4 and result.version == "v1"
    saved = load_file(student_dir / "diffusion_pytorch_model.safetensors")
    ema, raw = stage.learner.ema.model.state_dict(), stage.learner.unwrap(stage.learner.student).state_dict()
    assert all(torch.equal(saved[k], ema[k]) for k in saved)  # the EMA copy is what is saved ...
    assert any(not torch.equal(saved[k], raw[k]) for k in saved)  # ... not the last weights
    assert result.model_dirs == {"student": student_dir, "downsampler": g_dir}
    assert _weights_hash(teacher_dir) == teacher_hash
    student = load_sr_model(student_dir)
    assert student.kind == "student" and student.schedule.num_steps == 4
    g = load_downsampler(g_dir)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert g(x).shape == (1, 3, 8, 8) and not torch.equal(g(x), downsample(x, 4))
    for folder, kind in ((student_dir, "student"), (g_dir, "downsampler")):
        info = json.loads((folder / "training.json").read_text())
        assert info["kind"] == kind and info["teacher"]["version"] == "t1" and info["steps"] == 4
        assert len(info["history"]) == 4 and info["image_ids"] == ["a", "b", "c"]
        assert {f"loss_{k}" for k, w in ALL_ON.items() if w > 0} | {"acc_d_hr", "acc_d_lr"} <= set(info["history"][-1])
        assert {"teacher", "student", "downsampler", "discriminators", "generator_update"} <= set(info["time_breakdown"])
        assert info["lpips"] == "weight 0" and info["teacher_steps"] == 2
    # paths to other folders are stored relative to the data root (tmp_path here), so it can be moved
    student_info = json.loads((student_dir / "training.json").read_text())
    assert student_info["downsampler"] == "models/downsampler/v1" and student_info["teacher"]["path"] == "models/teacher/t1"
    assert json.loads((g_dir / "training.json").read_text())["student"] == "models/student/v1"
    assert latest_state(tmp_path / "run") is None


@pytest.mark.parametrize("camera_g", [False, True], ids=["first-g", "camera-g-with-noise-fit"])
def test_interrupted_run_resumes_bit_identically(tmp_path, camera_g):
    teacher_dir = make_teacher(tmp_path)
    fitted = dict(downsampler=DownsamplerConfig(noise_model="camera", blur_model="kernel"), noise_fit_every=3,
                  noise_fit_crops=8)
    profile, run = tiny_profile(**(fitted if camera_g else {})), tmp_path / "run"
    data = (profile, teacher_dir, photos(), field_lr())
    assert tc.train_colearn(*data, run, *outs(tmp_path, "unused"), stop_after=3) is None
    assert saved_record(latest_state(run)).step == 2
    with pytest.raises(UnfinishedRun, match=f"--resume.*{run}"):
        tc.train_colearn(*data, run, *outs(tmp_path))
    result = tc.train_colearn(*data, run, *outs(tmp_path), resume=True)
    assert result is not None and result.steps == 4
    assert [r["step"] for r in result.history] == [1, 2, 3, 4]
    straight = tc.train_colearn(*data, tmp_path / "run2", *outs(tmp_path, "v2"))
    for role in ("student", "downsampler"):
        assert _weights_hash(result.model_dirs[role]) == _weights_hash(straight.model_dirs[role])


def test_nan_guard_names_the_step(tmp_path, monkeypatch):
    teacher_dir = make_teacher(tmp_path)
    monkeypatch.setattr(tc, "mse", lambda a, b: torch.tensor(float("nan")))
    with pytest.raises(TrainingDiverged, match=r"distill.*step 1"):
        tc.train_colearn(tiny_profile(), teacher_dir, photos(), field_lr(), tmp_path / "run", *outs(tmp_path))
    assert not (tmp_path / "models" / "student").exists()


def test_fixed_degradation_ablation_needs_no_field_images_and_saves_only_the_student(tmp_path):
    teacher_dir = make_teacher(tmp_path)
    for fixed in ("bicubic", "synthetic"):
        profile = tiny_profile(train={"steps": 1}, use_downsampler=False, fixed_degradation=fixed)
        student_dir, _ = outs(tmp_path, fixed)
        result = tc.train_colearn(profile, teacher_dir, photos(), [], tmp_path / f"run-{fixed}", student_dir)
        assert result is not None and result.model_dirs == {"student": student_dir}
        info = json.loads((student_dir / "training.json").read_text())
        assert all(info["loss_weights"][k] == 0 for k in ("adv_lr", "struct", "cyc_lr"))
        assert "acc_d_lr" not in info["history"][-1] and "acc_d_hr" in info["history"][-1]


def test_missing_field_images_or_downsampler_folder_are_errors(tmp_path):
    teacher_dir = make_teacher(tmp_path)
    with pytest.raises(ValueError, match="field LR"):
        tc.train_colearn(tiny_profile(), teacher_dir, photos(), [], tmp_path / "run", *outs(tmp_path))
    with pytest.raises(ValueError, match="downsampler_out"):
        tc.train_colearn(tiny_profile(), teacher_dir, photos(), field_lr(), tmp_path / "run", outs(tmp_path)[0])


def test_cli_trains_from_the_catalog_with_the_newest_teacher(tmp_path, capsys):
    import yaml
    from PIL import Image

    from sr_pipeline.cli import main
    from sr_pipeline.storage.layout import DataLayout
    from sr_pipeline.storage.store import put_image, relative_to_root, write_batch_catalog

    from sr_pipeline.sr.images.jpeg_settings import JpegSettings, annex_k_luma

    layout = DataLayout(tmp_path / "data")
    rows = []
    camera_jpeg = JpegSettings((annex_k_luma(80), annex_k_luma(80)), "4:2:0")  # what its uploads' headers said
    for role, imgs in (("hr_reference", photos()), ("field_lr", field_lr())):
        for img in imgs:
            image_id, path, _ = put_image(layout, Image.fromarray(img))
            camera = "ref_cam" if role == "hr_reference" else "field_cam"
            rows.append({"image_id": image_id, "batch": "b1", "camera": camera, "role": role,
                         "stored_path": relative_to_root(layout, path), "outcome": "accepted",
                         "jpeg": camera_jpeg.to_json() if role == "field_lr" else None})
    write_batch_catalog(layout, "b1", rows)
    config = tmp_path / "tiny.yaml"
    camera_g = DownsamplerConfig(channels=8, num_blocks=1, norm_num_groups=4, noise_model="camera")
    config.write_text(yaml.safe_dump(tiny_profile(train={"steps": 2}, downsampler=camera_g).to_dict()))
    cameras = tmp_path / "cameras.yaml"
    cameras.write_text("cameras:\n  ref_cam: {role: hr_reference}\n  field_cam: {role: field_lr, min_field_images: 2,"
                       " camera_model: {colour_transform: true, jpeg_stage: true}}\n  grey_cam: {role: field_lr}\n")
    argv = ["--data", str(layout.root), "train", "colearn", "--config", str(config), "--cameras", str(cameras)]
    assert main(argv) == 2 and "no teacher" in capsys.readouterr().err
    make_teacher(layout.root)  # -> <data>/models/teacher/t1
    # grey_cam has no images: refused with what to do, before anything is trained
    assert main(argv + ["--camera", "grey_cam"]) == 2
    assert "'grey_cam' has 0 unpaired field image(s)" in capsys.readouterr().err
    assert main(argv + ["--camera", "ref_cam"]) == 2 and "needs a field_lr camera" in capsys.readouterr().err
    assert main(argv + ["--camera", "nope"]) == 2 and "unknown camera 'nope'" in capsys.readouterr().err
    assert main(argv) == 0  # the only field camera with images
    out = capsys.readouterr().out
    assert "student saved to" in out and "downsampler saved to" in out and "time per step" in out
    assert "field_cam: 100% of its uploads are JPEG (4:2:0, quality about 80)" in out
    (student,) = (layout.models / "student").iterdir()
    (g,) = (layout.models / "downsampler").iterdir()
    assert student.name == g.name  # one version for the pair
    info = json.loads((student / "training.json").read_text())
    assert info["image_ids"] == [r["image_id"] for r in rows[:3]]
    assert info["field_image_ids"] == [r["image_id"] for r in rows[3:]]
    assert info["teacher"]["version"] == "t1" and json.loads((g / "training.json").read_text())["kind"] == "downsampler"
    assert info["camera"] == "field_cam"
    # the camera's own camera_model choice from the registry, over the profile's
    assert json.loads((g / "config.json").read_text())["colour_transform"] is True
    # the camera's JPEG settings from its uploads' catalog rows, which its G compresses with
    assert load_downsampler(g).jpeg == camera_jpeg
    assert info["jpeg_stage"] is True and info["field_jpeg"] == {"subsampling": "4:2:0", "quality_estimate": 80}
    assert info["profile"]["colearn"]["weights"]["colour_match"] == 1.0
    assert latest_state(layout.run_dir("colearn", "tiny")) is None


def test_grey_field_camera_is_trained_grey_end_to_end(tmp_path):
    from sr_pipeline.sr.images.tensors import is_grey

    teacher_dir = make_teacher(tmp_path)
    student_dir, g_dir = outs(tmp_path)
    grey_field = [np.repeat(im.mean(axis=-1, keepdims=True).astype(np.uint8), 3, axis=-1) for im in field_lr()]
    profile = tiny_profile(downsampler=DownsamplerConfig(channels=8, num_blocks=1, norm_num_groups=4,
                                                         noise_model="camera"))
    stage = tc.ColearnStage(profile, teacher_dir, photos(), grey_field, student_dir, g_dir)
    assert stage.grey and all(is_grey(im) for im in stage.hr_images)  # HR targets reduced to their luma
    run_stage(stage, tmp_path / "run")
    assert json.loads((student_dir / "training.json").read_text())["grey_field_camera"] is True
    g = load_downsampler(g_dir)
    assert g.config.grey
    with torch.no_grad():
        y = g(torch.rand(1, 3, 32, 32) * 2 - 1, torch.randn(1, 3, 8, 8))
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 0], y[:, 2])
    # (Serving writes a grey recording's output grey: test_upscale_cli covers grey inputs end to end.)


def test_colour_field_camera_is_not_treated_as_grey(tmp_path):
    stage = tc.ColearnStage(tiny_profile(), make_teacher(tmp_path), photos(), field_lr(), *outs(tmp_path))
    assert not stage.grey


def test_the_kernel_camera_model_trains_its_blur_and_noise_with_no_network(tmp_path):
    """blur_model kernel: only the Gaussian's and the noise's parameters exist, and co-learning moves them."""
    teacher_dir = make_teacher(tmp_path)
    student_dir, g_dir = outs(tmp_path)
    profile = tiny_profile(downsampler=DownsamplerConfig(noise_model="camera", blur_model="kernel"))
    stage = tc.ColearnStage(profile, teacher_dir, photos(), field_lr(), student_dir, g_dir)
    run_stage(stage, tmp_path / "run")
    g = load_downsampler(g_dir)
    fresh = type(g)(scale=4, noise_model="camera", blur_model="kernel")
    assert g.config.blur_model == "kernel" and g.network_parameters() == []
    assert not torch.equal(g.blur_log_sigma, fresh.blur_log_sigma)  # the blur was trained ...
    assert not torch.equal(g.log_read_sigma, fresh.log_read_sigma)  # ... and the noise


def test_the_jpeg_stage_is_used_only_with_the_camera_g_and_when_the_profile_allows_it(tmp_path):
    from sr_pipeline.sr.images.jpeg_settings import JpegSettings, annex_k_luma

    jpeg = JpegSettings((annex_k_luma(70), annex_k_luma(70)), "4:2:0")
    teacher_dir = make_teacher(tmp_path)

    def stage(**downsampler):
        dc = DownsamplerConfig(channels=8, num_blocks=1, norm_num_groups=4, **downsampler)
        return tc.ColearnStage(tiny_profile(downsampler=dc), teacher_dir, photos(), field_lr(), *outs(tmp_path),
                               field_jpeg=jpeg)

    assert stage(noise_model="camera", jpeg_stage=True).jpeg_stage
    assert not stage(noise_model="camera").jpeg_stage  # off unless asked for
    assert not stage(noise_model="input", jpeg_stage=True).jpeg_stage  # the first design has no camera parts to put it after
    assert not tc.ColearnStage(tiny_profile(), teacher_dir, photos(), field_lr(), *outs(tmp_path)).jpeg_stage


def test_input_sharpness_spread_moves_the_students_lr_between_gs_and_bicubic(tmp_path):
    x, _ = batch()
    plain = learner_for(tmp_path / "plain", tiny_profile())
    gen = plain.generate(x)
    assert torch.equal(gen["y_in"], gen["y_hat"].detach())  # off by default: the student sees G's LR

    spread = learner_for(tmp_path / "spread", tiny_profile(input_sharpness_spread=1.0))
    with torch.no_grad():  # move G off bicubic (its residual starts near zero)
        for p in spread.unwrap(spread.downsampler).conv_out.parameters():
            p.normal_(0, 0.2, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(3)
    gen = spread.generate(x)
    y_hat, y_in, bicubic = gen["y_hat"].detach(), gen["y_in"], downsample(x, 4)
    # per crop, y_in = y_hat + share * (down(x) - y_hat) with one share in [0, 1] for the whole crop
    for i in range(x.shape[0]):
        share = float(((y_in[i] - y_hat[i]) * (bicubic[i] - y_hat[i])).sum() / ((bicubic[i] - y_hat[i]) ** 2).sum())
        assert 0.0 <= share <= 1.0
        assert torch.allclose(y_in[i], y_hat[i] + share * (bicubic[i] - y_hat[i]), atol=1e-5)
    assert not torch.equal(y_in, y_hat)
    # G's own terms still judge G's LR, not the student's input
    assert "y_struct" in gen and gen["y_hat"].requires_grad
