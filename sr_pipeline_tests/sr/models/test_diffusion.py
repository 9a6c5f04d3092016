"""The residual-shifting schedule, forward process and both samplers (method.md section 1)."""

import math

import pytest
import torch

from sr_pipeline.sr.models.diffusion import ResShiftSchedule, eta_schedule

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


def _marginal_case(seed: int = 0):
    """An HR image x0, its upsampled LR up(y) and the noise eps of one forward path, in float64."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(2, 3, 6, 6, generator=g, dtype=torch.float64) * 2 - 1
    up_y = torch.rand(2, 3, 6, 6, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(2, 3, 6, 6, generator=g, dtype=torch.float64)
    return x0, up_y, eps


def _marginal(s: ResShiftSchedule, x0, up_y, eps, t: int) -> torch.Tensor:
    """x0 + eta_t (up(y) - x0) + kappa sqrt(eta_t) eps, written out rather than through q_sample."""
    eta = float(s.etas[t])
    return x0 + eta * (up_y - x0) + s.kappa * math.sqrt(eta) * eps


@pytest.mark.parametrize("num_steps, kappa", [(15, 2.0), (4, 1.0)])
def test_one_deterministic_step_moves_the_forward_marginal_from_t_to_s(num_steps, kappa):
    # With an oracle x0_hat = x0, x_t on the forward path of (x0, y, eps) must land on the same path at s:
    # the shift towards up(y) shrinks from eta_t to eta_s and the noise from sqrt(eta_t) to sqrt(eta_s) eps.
    s = ResShiftSchedule(num_steps=num_steps, kappa=kappa)
    x0, up_y, eps = _marginal_case()
    pairs = {(t, t - 1) for t in range(2, num_steps + 1)}  # the full chain
    for n in range(2, num_steps):  # and every skip a sampler with fewer steps takes
        steps = s.timesteps(n)
        pairs |= set(zip(steps[:-1], steps[1:]))
    pairs |= {(num_steps, 1)}
    for t, t_s in sorted(pairs):
        x_t = _marginal(s, x0, up_y, eps, t)
        out = s.deterministic_step(x0, x_t, up_y, t, t_s)
        torch.testing.assert_close(out, _marginal(s, x0, up_y, eps, t_s), rtol=0, atol=1e-12,
                                   msg=f"step {t} -> {t_s} leaves the forward marginal")


@pytest.mark.parametrize("num_inference_steps", [None, 7, 4, 2])
def test_the_deterministic_sampler_visits_the_forward_marginal_at_every_step(num_inference_steps):
    # The oracle records what it is given: the x_t the sampler reached, scaled for the network. The prior
    # x_T = up(y) + kappa sqrt(eta_T) eps is off the forward marginal by d = (1 - eta_T)(up(y) - x0); each
    # step scales that offset by m = sqrt(eta_s / eta_t), so x_t must be the marginal + sqrt(eta_t / eta_T) d.
    s = ResShiftSchedule()
    x0, up_y, eps = _marginal_case(1)
    seen = {}

    def oracle(x_scaled, y, t):
        seen[int(t[0])] = x_scaled * math.sqrt(s.kappa**2 * float(s.etas[int(t[0])]) + 1)
        return x0

    out = s.sample(oracle, up_y, eps, num_inference_steps=num_inference_steps)
    assert sorted(seen, reverse=True) == s.timesteps(num_inference_steps)
    eta_T = float(s.etas[s.num_steps])
    offset = (1 - eta_T) * (up_y - x0)
    for t, x_t in seen.items():
        expected = _marginal(s, x0, up_y, eps, t) + math.sqrt(float(s.etas[t]) / eta_T) * offset
        torch.testing.assert_close(x_t, expected, rtol=0, atol=1e-9,
                                   msg=f"x_{t} is off the forward path")
    torch.testing.assert_close(out, x0, rtol=0, atol=0)


@pytest.mark.parametrize("t, t_s", [(10, 9), (15, 5), (4, 1)])
def test_a_stochastic_step_with_an_oracle_keeps_the_forward_marginal(t, t_s):
    # x_t ~ q(x_t | x0, y) and x0_hat = x0: the posterior sample at s is distributed as q(x_s | x0, y),
    # mean x0 + eta_s (up(y) - x0) and variance kappa^2 eta_s, for consecutive and for skipped steps.
    s = ResShiftSchedule()
    n = 200_000
    x0, up_y = torch.full((n, 1, 1, 1), 0.4), torch.full((n, 1, 1, 1), -0.6)
    gen = torch.Generator().manual_seed(3)
    x_t = s.q_sample(x0, up_y, torch.full((n,), t), torch.randn(n, 1, 1, 1, generator=gen))
    out = s.stochastic_step(x0, x_t, t, t_s, gen)
    eta_s = float(s.etas[t_s])
    std = s.kappa * math.sqrt(eta_s)
    assert out.mean().item() == pytest.approx(0.4 + eta_s * (-0.6 - 0.4), abs=5 * std / math.sqrt(n))
    assert out.var().item() == pytest.approx(std**2, rel=0.02)
