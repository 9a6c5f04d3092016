"""Teacher training: it learns, it saves and loads, it resumes, and it stops on a NaN."""

import json

import numpy as np
import pytest
import torch

from conftest import photos
from sr_pipeline.sr.models.checkpoints import load_sr_model
from sr_pipeline.sr.train.profile import DiffusionConfig, NetConfig, OptimConfig, Profile
from sr_pipeline.sr.images.tensors import downsample
from sr_pipeline.sr.train.stages import teacher as tt
from sr_pipeline.sr.train.loop import UnfinishedRun, latest_state, saved_record
from sr_pipeline.sr.train.shared import TrainingDiverged

TINY_NET = NetConfig(block_out_channels=(8, 16), attention_levels=(False, False), norm_num_groups=4)


def tiny_profile(**teacher) -> Profile:
    opts = dict(steps=6, batch_size=2, patch_size=32, lr=1e-3, warmup_steps=1, save_every=2, log_every=1,
                num_workers=0, ema_decay=0.9)
    opts.update(teacher)
    return Profile(name="tiny", net=TINY_NET, diffusion=DiffusionConfig(num_steps=4, kappa=1.0),
                   teacher=OptimConfig(**opts))


def test_tiny_teacher_overfits_one_pair():
    torch.manual_seed(0)
    profile = tiny_profile()
    net, schedule = tt.build_teacher(profile)
    x = torch.from_numpy(photos(1, 32)[0]).permute(2, 0, 1)[None].float() / 127.5 - 1
    hr = x.repeat(4, 1, 1, 1)
    lr = downsample(hr, 4)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(200):
        loss = tt.teacher_loss(net, schedule, hr, lr, 4)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < np.mean(losses[:5]) / 10


def test_train_saves_a_loadable_teacher(tmp_path):
    profile = tiny_profile(steps=4)
    out = tmp_path / "models" / "teacher" / "v1"
    result = tt.train_teacher(profile, photos(), tmp_path / "run", out, image_ids=["a", "b", "c"])
    assert result is not None and result.steps == 4
    assert result.model_dir == out and result.version == "v1" and result.model_dirs == {"teacher": out}
    info = json.loads((out / "training.json").read_text())
    assert info["kind"] == "teacher" and info["steps"] == 4 and info["image_ids"] == ["a", "b", "c"]
    assert info["version"] == "v1" and info["num_images"] == 3 and info["final_loss"] == info["history"][-1]["loss"]
    assert info["profile"]["name"] == "tiny" and len(info["history"]) == 4
    assert latest_state(tmp_path / "run") is None  # a finished run leaves no state to resume
    loaded = load_sr_model(out)
    assert loaded.schedule.num_steps == 4 and loaded.kind == "teacher"
    up = torch.zeros(1, 3, 32, 32)
    with torch.no_grad():
        a = loaded.schedule.sample(loaded.net, up, torch.ones_like(up))
        again = load_sr_model(out)
        b = again.schedule.sample(again.net, up, torch.ones_like(up))
    assert torch.equal(a, b)


def test_interrupted_run_resumes_to_the_same_final_step(tmp_path):
    profile = tiny_profile(steps=6, save_every=2)
    run = tmp_path / "run"
    assert tt.train_teacher(profile, photos(), run, tmp_path / "unused", stop_after=3) is None
    assert saved_record(latest_state(run)).step == 2
    with pytest.raises(UnfinishedRun, match="--resume"):
        tt.train_teacher(profile, photos(), run, tmp_path / "out")
    result = tt.train_teacher(profile, photos(), run, tmp_path / "out", resume=True)
    assert result.steps == 6 and result.model_dir == tmp_path / "out"
    steps = [row["step"] for row in result.history]
    # Steps 1-2 come from the saved state, step 3 was lost with the "crash", 3-6 were run again.
    assert steps == [1, 2, 3, 4, 5, 6]
    # Data, RNG and optimiser state are all restored: the result equals an uninterrupted run's.
    straight = tt.train_teacher(profile, photos(), tmp_path / "run2", tmp_path / "out2")
    a = load_sr_model(result.model_dir).net.state_dict()
    b = load_sr_model(straight.model_dir).net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [(r["step"], r["loss"]) for r in result.history] == [(r["step"], r["loss"]) for r in straight.history]


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_state(tmp_path, monkeypatch):
    profile = tiny_profile(steps=6, save_every=2)
    run = tmp_path / "run"
    real = tt.teacher_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(tt, "teacher_loss", poisoned)
    with pytest.raises(TrainingDiverged, match="step 3"):
        tt.train_teacher(profile, photos(), run, tmp_path / "models" / "teacher" / "v1")
    assert saved_record(latest_state(run)).step == 2
    assert not (tmp_path / "models").exists()
