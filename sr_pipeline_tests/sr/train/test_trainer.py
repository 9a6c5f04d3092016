"""The shared training loop: resumable state that survives a kill mid-save, bit-identical resume,
refusal to overwrite, the NaN stop, progress windows, EMA arithmetic, and a core free of storage."""

import ast
import hashlib
import itertools
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import photos
from sr_pipeline.sr.train.profile import OptimConfig, Profile
from sr_pipeline.sr.train.stages.base import ModelOutput, Stage
from sr_pipeline.sr.train.loop import UnfinishedRun, latest_state, run_stage, saved_record, saved_states
from sr_pipeline.sr.train.shared import EMA, TrainingDiverged, check_finite

SR = Path(__file__).resolve().parents[3] / "sr_pipeline" / "sr"


class LineStage(Stage):
    """A two-weight linear model fitted to 1: cheap, but with data by index, RNG draws and an EMA."""

    def __init__(self, out_dir: Path, steps: int = 6, nan_at: int | None = None, **opt):
        self.profile = Profile(name="line", teacher=OptimConfig(steps=steps, batch_size=1, patch_size=32,
                                                                save_every=2, log_every=2, ema_decay=0.5, **opt))
        self.opt, self.out_dir, self.nan_at = self.profile.teacher, Path(out_dir), nan_at
        self.losses: list[float] = []

    def build(self, accelerator) -> None:
        model = torch.nn.Linear(2, 1)
        self.ema = EMA(model, self.opt.ema_decay)
        self.model, self.optimizer = accelerator.prepare(model, torch.optim.Adam(model.parameters(), lr=0.05))
        self.accelerator = accelerator

    def checkpointed(self) -> list:
        return [self.ema]

    def batches(self, start: int):
        return (torch.tensor([[float(i % 5), 1.0]]) for i in itertools.count(start))

    def step(self, batch, step: int) -> dict[str, float]:
        noisy = batch + 0.1 * torch.randn_like(batch)  # RNG consumption that resume must restore
        loss = ((self.model(noisy) - 1) ** 2).mean() * (float("nan") if step == self.nan_at else 1.0)
        check_finite({"loss": loss}, step)
        self.optimizer.zero_grad()
        self.accelerator.backward(loss)
        self.optimizer.step()
        self.ema.update(self.accelerator.unwrap_model(self.model), step)
        self.losses.append(loss.item())
        return {"loss": loss.item()}

    def info(self, history: list[dict]) -> dict:
        return {"final_loss": history[-1]["loss"]}

    def outputs(self) -> list[ModelOutput]:
        return [ModelOutput("line", self.out_dir, lambda tmp: torch.save(self.ema.state_dict(), tmp / "w.pt"),
                            {"kind": "line"})]


def losses(history: list[dict]) -> list[tuple]:
    return [(r["step"], r["loss"]) for r in history]


def weights(folder: Path) -> dict:
    return torch.load(folder / "w.pt", weights_only=True)


def equal_states(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs."""


def test_a_kill_mid_save_keeps_the_last_good_state_and_resume_is_bit_identical(tmp_path, monkeypatch):
    from accelerate import Accelerator

    real_save = Accelerator.save_state
    calls = {"n": 0}

    def dying_save(self, output_dir=None, **kw):
        calls["n"] += 1
        if calls["n"] == 2:  # the save at step 4: half-written, then the process dies
            real_save(self, output_dir, **kw)
            (Path(output_dir) / "optimizer.bin").write_bytes(b"trunc")
            raise Killed
        return real_save(self, output_dir, **kw)

    run = tmp_path / "run"
    monkeypatch.setattr(Accelerator, "save_state", dying_save)
    with pytest.raises(Killed):
        run_stage(LineStage(tmp_path / "out"), run)
    monkeypatch.setattr(Accelerator, "save_state", real_save)
    assert [p for p in run.iterdir() if p.name.startswith(".")]  # the half-written save, never renamed
    (good,) = saved_states(run)
    assert good.name == "checkpoint-00000002" and saved_record(good).step == 2
    before = digests(good)
    assert {"model.safetensors", "optimizer.bin", "random_states_0.pkl", "custom_checkpoint_0.pkl",
            "custom_checkpoint_1.pkl"} <= set(before)  # weights, Adam, RNG, the loop record, the EMA

    resumed_stage = LineStage(tmp_path / "out")
    resumed = run_stage(resumed_stage, run, resume=True)
    assert [r["step"] for r in resumed.history] == [2, 4, 6]
    assert latest_state(run) is None and not any(p.name.startswith(".") for p in run.iterdir())
    straight = run_stage(LineStage(tmp_path / "out2"), tmp_path / "run2")
    assert equal_states(weights(resumed.model_dir), weights(straight.model_dir))
    assert losses(resumed.history) == losses(straight.history)


def test_periodic_saves_replace_the_previous_state(tmp_path):
    run = tmp_path / "run"
    assert run_stage(LineStage(tmp_path / "out", steps=8), run, stop_after=5) is None
    assert [p.name for p in saved_states(run)] == ["checkpoint-00000004"]
    assert not (tmp_path / "out").exists()


def test_refuses_an_unfinished_run_without_resume_and_an_existing_model_folder(tmp_path):
    run = tmp_path / "run"
    run_stage(LineStage(tmp_path / "a"), run, stop_after=3)
    with pytest.raises(UnfinishedRun, match=rf"--resume.*delete {run}"):
        run_stage(LineStage(tmp_path / "a"), run)
    assert saved_record(latest_state(run)).step == 2  # untouched
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    stage = LineStage(taken)
    with pytest.raises(FileExistsError, match="never overwritten"):
        run_stage(stage, tmp_path / "run-b")
    assert stage.losses == [] and (taken / "keep.txt").read_text() == "mine"  # refused before any step


def test_non_finite_loss_names_the_step_and_keeps_the_last_saved_state(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="step 5"):
        run_stage(LineStage(tmp_path / "out", nan_at=5), run)
    assert saved_record(latest_state(run)).step == 4
    assert not (tmp_path / "out").exists()


def test_progress_reports_the_mean_of_each_log_window(tmp_path):
    rows = []
    stage = LineStage(tmp_path / "out")
    result = run_stage(stage, tmp_path / "run", report=rows.append)
    assert [r["step"] for r in rows] == [2, 4, 6] and all(r["total_steps"] == 6 for r in rows)
    for i, row in enumerate(rows):
        assert row["loss"] == pytest.approx(sum(stage.losses[2 * i: 2 * i + 2]) / 2, rel=1e-12)
        assert row["samples_per_s"] > 0
    assert result.history == [{k: v for k, v in r.items() if k not in ("total_steps", "hr_mp_per_s")} for r in rows]
    assert result.info["final_loss"] == rows[-1]["loss"]


def test_ema_update_is_the_expected_lerp():
    model = torch.nn.Linear(3, 1)
    ema = EMA(model, decay=0.9)
    start = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model, step=1000)  # past the warm-up: decay 0.9
    for k, p in model.state_dict().items():
        assert torch.allclose(ema.state_dict()[k], 0.9 * start[k] + 0.1 * p, atol=1e-6)
    # The warm-up: at step 0 the decay is min(0.9, 1/10) = 0.1, so the average jumps most of the way.
    mid = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.sub_(3.0)
    ema.update(model, step=0)
    for k, p in model.state_dict().items():
        assert torch.allclose(ema.state_dict()[k], 0.1 * mid[k] + 0.9 * p, atol=1e-6)
    assert not ema.model.training and not any(p.requires_grad for p in ema.model.parameters())


def test_ema_warmup_two_is_a_running_mean_until_the_decay_caps_it():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EMA(model, decay=0.75, warmup=2)

    def step(value: float, s: int) -> float:
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update(model, step=s)
        return float(ema.model.weight)

    assert step(2.0, 1) == pytest.approx((2 * 1.0 + 2.0) / 3)  # decay 2/3: the start weighs twice
    assert step(5.0, 2) == pytest.approx((2 * 1.0 + 2.0 + 5.0) / 4)  # decay 3/4
    assert step(-1.0, 3) == pytest.approx(0.75 * 9.0 / 4 - 0.25)  # (1+3)/(2+3) = 0.8 is capped at 0.75


def test_the_teacher_folder_holds_the_ema_weights(tmp_path):
    from test_train_teacher import tiny_profile

    from sr_pipeline.sr.train.stages.teacher import TeacherStage

    stage = TeacherStage(tiny_profile(steps=3, ema_decay=0.5), photos(), tmp_path / "teacher" / "v1")
    result = run_stage(stage, tmp_path / "run")
    saved = load_file(result.model_dir / "diffusion_pytorch_model.safetensors")
    ema = stage.ema.model.state_dict()
    raw = stage.accelerator.unwrap_model(stage.net).state_dict()
    assert all(torch.equal(saved[k], ema[k]) for k in saved)
    assert any(not torch.equal(saved[k], raw[k]) for k in saved)  # the average, not the last weights


FORBIDDEN = ("sr_pipeline.storage", "sr_pipeline.intake", "dagster", "dagster_pipes")
ASSET_NAMES = ("teacher_checkpoint", "co_trained_student", "learned_downsampler")


@pytest.mark.parametrize("path", sorted((SR / "train").rglob("*.py")), ids=lambda p: str(p.relative_to(SR)))
def test_the_training_core_knows_nothing_of_storage_or_dagster(path):
    source = path.read_text()
    for node in ast.walk(ast.parse(source)):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        # common.atomic is a leaf every layer may use (docs/architecture.md; test_architecture.py checks every layer)
        assert not [n for n in names if n.startswith(FORBIDDEN) and n != "sr_pipeline.common.atomic"], \
            f"{path.name} imports {names}"
    assert not [a for a in ASSET_NAMES if a in source]


def test_a_model_folders_files_follow_the_umask(tmp_path):
    """safetensors writes 0600; a student another user serves must be readable as every other file is."""
    from conftest import tiny_sr_model

    from sr_pipeline.common.atomic import umask_mode

    folder = tiny_sr_model(tmp_path / "models" / "student" / "s1", {"kind": "student"})
    modes = {f.name: f.stat().st_mode & 0o777 for f in folder.iterdir() if f.is_file()}
    assert "diffusion_pytorch_model.safetensors" in modes and set(modes.values()) == {umask_mode()}
