"""The residual-shifting schedule, forward process and both samplers (method.md section 1)."""

import math

import pytest
import torch

from sr_pipeline.sr.diffusion import ResShiftSchedule, eta_schedule

EXPECTED_ETAS = [0.0004, 0.01373, 0.03108, 0.05458, 0.08502, 0.12321, 0.17004, 0.22644, 0.29341,
                 0.37199, 0.4633, 0.56849, 0.68882, 0.82557, 0.9801]


def test_schedule_reproduces_method_values():
    etas = eta_schedule(15, 2.0, 0.3)
    assert etas.shape == (15,)
    assert torch.allclose(etas, torch.tensor(EXPECTED_ETAS, dtype=torch.float64), atol=1e-4)
    s = ResShiftSchedule()
    assert s.etas[0] == 0 and torch.allclose(s.etas[1:], etas)


def test_schedule_config_round_trip(tmp_path):
    s = ResShiftSchedule(num_steps=4, kappa=1.0, power=0.3)
    s.save_config(tmp_path)
    loaded = ResShiftSchedule.from_config(ResShiftSchedule.load_config(tmp_path))
    assert loaded.num_steps == 4 and loaded.kappa == 1.0
    assert torch.equal(loaded.etas, s.etas)


def test_forward_marginal_mean_and_variance():
    torch.manual_seed(0)
    s = ResShiftSchedule()
    x0 = torch.full((1, 1, 1, 1), 0.3)
    up_y = torch.full((1, 1, 1, 1), -0.5)
    n = 200_000
    for t in (1, 7, 15):
        tt = torch.full((n,), t)
        xt = s.q_sample(x0.expand(n, 1, 1, 1), up_y.expand(n, 1, 1, 1), tt, torch.randn(n, 1, 1, 1))
        eta = float(s.etas[t])
        mean = 0.3 + eta * (-0.5 - 0.3)
        std = s.kappa * math.sqrt(eta)
        # Mean within 5 standard errors; variance within 2 %.
        assert abs(xt.mean().item() - mean) < 5 * std / math.sqrt(n)
        assert xt.var().item() == pytest.approx(std**2, rel=0.02)


def test_input_scaling_normalises_variance():
    s = ResShiftSchedule()
    t = torch.tensor([15])
    x = torch.ones(1, 1, 1, 1) * math.sqrt(s.kappa**2 * float(s.etas[15]) + 1)
    assert s.scale_input(x, t).item() == pytest.approx(1.0)


def test_deterministic_step_returns_x0_hat_at_t1():
    s = ResShiftSchedule()
    x0_hat, x_t, up_y = torch.randn(3, 2, 3, 8, 8)
    assert torch.allclose(s.deterministic_step(x0_hat, x_t, up_y, 1, 0), x0_hat)


def test_deterministic_sampler_is_deterministic_and_exact_with_an_oracle():
    s = ResShiftSchedule()
    x0 = torch.rand(2, 3, 8, 8) * 2 - 1
    up_y = torch.rand(2, 3, 8, 8) * 2 - 1
    noise = torch.randn(2, 3, 8, 8)
    oracle = lambda x, y, t: x0  # noqa: E731 - a perfect x0 predictor
    calls = []

    def counting(x, y, t):
        calls.append(int(t[0]))
        return torch.tanh(x + y)  # any fixed function

    a = s.sample(counting, up_y, noise)
    b = s.sample(counting, up_y, noise)
    assert torch.equal(a, b)
    assert calls == list(range(15, 0, -1)) * 2
    assert torch.allclose(s.sample(oracle, up_y, noise), x0, atol=1e-6)
    # The last step returns the network's own prediction at t = 1.
    last = {}
    s.sample(lambda x, y, t: last.setdefault("x", torch.tanh(x + y)) if int(t[0]) == 1 else torch.tanh(x + y),
             up_y, noise)
    assert torch.allclose(a, last["x"])


def test_fewer_inference_steps_keep_T_and_end_at_1():
    s = ResShiftSchedule()
    assert s.timesteps(4)[0] == 15 and s.timesteps(4)[-1] == 1 and len(s.timesteps(4)) == 4
    assert s.timesteps() == list(range(15, 0, -1))
    with pytest.raises(ValueError):
        s.timesteps(16)


def test_stochastic_sampler_is_seeded_and_uses_noise():
    s = ResShiftSchedule()
    up_y = torch.zeros(1, 3, 8, 8)
    noise = torch.randn(1, 3, 8, 8)
    f = lambda x, y, t: 0.5 * x  # noqa: E731
    a = s.sample(f, up_y, noise, deterministic=False, generator=torch.Generator().manual_seed(1))
    b = s.sample(f, up_y, noise, deterministic=False, generator=torch.Generator().manual_seed(1))
    c = s.sample(f, up_y, noise, deterministic=False, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_stochastic_posterior_mean_and_variance():
    s = ResShiftSchedule()
    n = 100_000
    x_t = torch.full((n, 1, 1, 1), 0.8)
    x0_hat = torch.full((n, 1, 1, 1), -0.2)
    out = s.stochastic_step(x0_hat, x_t, 10, 9, torch.Generator().manual_seed(0))
    e_t, e_s = float(s.etas[10]), float(s.etas[9])
    mean = (e_s / e_t) * 0.8 + ((e_t - e_s) / e_t) * -0.2
    var = s.kappa**2 * (e_s / e_t) * (e_t - e_s)
    assert out.mean().item() == pytest.approx(mean, abs=5 * math.sqrt(var / n))
    assert out.var().item() == pytest.approx(var, rel=0.02)
