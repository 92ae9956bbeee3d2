"""LSBScheduler: solver accuracy on an analytic bridge on the VP and the flow base, and diffusers' scheduler
contract."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, PNDMScheduler

from lsb.bridges import alpha_bar_to_sb_time, flow_level, flow_level_to_sb_time, sb_sigma, timestep_to_alpha_bar
from lsb.schedulers import LSBScheduler, LSBSchedulerOutput, config_base

torch.set_num_threads(1)
F64 = torch.float64
TAU, T0 = 5.29, 0.2

# SD 1.5's scheduler/scheduler_config.json
SD15_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}


# ------------------------------------------------------------------ analytic bridge


class GaussianToy:
    """Independent Gaussian endpoints x0 ~ N(a, s0^2), x1 ~ N(b, s1^2) (per entry) with exact predictors.

    On x_t = (1-t) x0 + t x1 + sigma_t z (independent coupling; LSB's Proposition 1: any coupling's
    predictors give an ODE from p0 to p1) x_t ~ N(m_t, V_t), V_t = (1-t)^2 s0^2 + t^2 s1^2 + sigma_t^2, and
    E[x0|x_t] = a + (1-t) s0^2 (x_t - m_t)/V_t, E[x1|x_t] = b + t s1^2 (x_t - m_t)/V_t. An SD-like model under the
    source / target prompt outputs eps_i = (x_t - E[x_i|x_t]) / sigma_t; with the ``interpolate`` noise predictor
    (1-t) eps_src + t eps_tgt = E[z|x_t] exactly, so the w = 1 ODE is the exact PF-ODE. In 1-D its flow is the
    monotone map: x_{t0} = m_{t0} + sqrt(V_{t0}) xi ends at exactly b + s1 xi. s0 = s1 = 0 gives point masses.
    """

    def __init__(self, a=-1.0, b=1.0, s0=1.0, s1=1.0, tau=TAU):
        self.a, self.b, self.s0, self.s1, self.tau = a, b, s0, s1, tau

    def mean_var(self, t):
        m = (1 - t) * self.a + t * self.b
        v = (1 - t) ** 2 * self.s0**2 + t**2 * self.s1**2 + sb_sigma(t, self.tau) ** 2
        return m, v

    def eps(self, x, t):
        m, v = self.mean_var(t)
        sigma = sb_sigma(t, self.tau)
        e0 = self.a + (1 - t) * self.s0**2 * (x - m) / v
        e1 = self.b + t * self.s1**2 * (x - m) / v
        return (x - e0) / sigma, (x - e1) / sigma

    def start(self, t0, xi):
        m, v = self.mean_var(t0)
        return m + math.sqrt(v) * xi

    def end(self, xi):
        return self.b + self.s1 * xi


XI = torch.linspace(-2.5, 2.5, 21, dtype=F64).view(21, 1, 1, 1)


def _to_prediction_type(eps, y, alpha_bar, prediction_type):
    x0 = (y - (1 - alpha_bar) ** 0.5 * eps) / alpha_bar**0.5
    if prediction_type == "v_prediction":
        return alpha_bar**0.5 * eps - (1 - alpha_bar) ** 0.5 * x0
    return x0 if prediction_type == "sample" else eps


def run_toy(scheduler, toy, nfe, guidance_scale=1.0, x=None, dtype=F64):
    """Run the scheduler like a pipeline: one batched [source; target] model call per timestep."""
    scheduler.set_timesteps(nfe)
    x = toy.start(scheduler.bridge_times[0].item(), XI) if x is None else x
    x = x.to(dtype)
    kind = scheduler.config.prediction_type
    for timestep in scheduler.timesteps:
        y = scheduler.scale_model_input(torch.cat([x, x]), timestep)
        t = scheduler.bridge_times[scheduler.step_index].item()
        torch.testing.assert_close(y[: len(x)], x * scheduler.alpha_bars[scheduler.step_index].item() ** 0.5)
        eps_src, eps_tgt = toy.eps(x.double(), t)
        # a v / x0 model expresses its output with the alpha_bar of the (float32) timestep it is given
        alpha_bar = timestep_to_alpha_bar(timestep.double(), scheduler.alphas_cumprod).item()
        out = _to_prediction_type(torch.cat([eps_src, eps_tgt]), y.double(), alpha_bar, kind).to(dtype)
        x = scheduler.step(out, timestep, x, guidance_scale=guidance_scale).prev_sample
    return x


def toy_error(solver, nfe, toy=None, noise_predictor="interpolate", **kwargs):
    toy = toy or GaussianToy()
    sched = LSBScheduler(solver=solver, noise_predictor=noise_predictor, tau=TAU, t0=T0)
    return (run_toy(sched, toy, nfe, **kwargs) - toy.end(XI)).abs().max().item()


@pytest.mark.parametrize("solver", ["euler", "ddim", "multistep"])
def test_point_mass_endpoints_land_on_the_target(solver):
    """Deterministic endpoints: every solver ends at b (ddim / multistep integrate the path exactly)."""
    toy = GaussianToy(a=-1.0, b=2.0, s0=0.0, s1=0.0)
    for nfe in (2, 3, 8):
        assert toy_error(solver, nfe, toy) < 1e-9
    # also from the paper's initial state (1 - t0) x_src + sigma_t0 z, which omits t0 x1
    sched = LSBScheduler(solver=solver, noise_predictor="interpolate")
    sched.set_timesteps(4)
    x = sched.prepare_initial_sample(torch.full_like(XI, -1.0), XI)
    assert (run_toy(sched, toy, 4, x=x) - 2.0).abs().max().item() < 1e-9


NFES = (2, 4, 8, 16, 32)


@pytest.fixture(scope="module")
def gaussian_errors():
    """Max error against the exact endpoint b + s1 xi (w = 1, ``interpolate`` noise), per solver and NFE."""
    return {solver: [toy_error(solver, n) for n in NFES] for solver in ("euler", "ddim", "multistep")}


@pytest.mark.parametrize("solver", ["euler", "ddim", "multistep"])
def test_gaussian_bridge_error_decreases_with_nfe(gaussian_errors, solver):
    errors = gaussian_errors[solver]
    assert all(e1 < e0 for e0, e1 in zip(errors, errors[1:])), errors
    assert errors[-1] < errors[0] / (12 if solver == "multistep" else 5), errors


def test_multistep_beats_ddim_beats_euler(gaussian_errors):
    euler, ddim, multistep = (gaussian_errors[k] for k in ("euler", "ddim", "multistep"))
    assert multistep[NFES.index(4)] < euler[NFES.index(8)]  # NFE 4 multistep vs the paper's Euler at NFE 8
    assert all(m < d < e for m, d, e in zip(multistep[:4], ddim[:4], euler[:4])), gaussian_errors


@pytest.mark.parametrize("noise_predictor,guidance_scale", [("switch", 1.0), ("switch", 3.0), ("interpolate", 7.5)])
def test_solvers_agree_on_the_guided_switch_ode(noise_predictor, guidance_scale):
    """No closed form with the paper's switch noise / CFG: all three solvers must converge to one ODE solution."""
    toy = GaussianToy()

    def run(solver, nfe):
        sched = LSBScheduler(solver=solver, noise_predictor=noise_predictor)
        return run_toy(sched, toy, nfe, guidance_scale=guidance_scale)

    ref = run("multistep", 1024)
    scale = (ref - toy.start(T0, XI)).abs().max().item()
    for solver in ("euler", "ddim", "multistep"):
        errors = [(run(solver, n) - ref).abs().max().item() / scale for n in (8, 32, 128)]
        assert errors[2] < errors[1] < errors[0], (solver, errors)
        assert errors[2] < (0.02 if solver == "multistep" else 0.1), (solver, errors)


@pytest.mark.parametrize("prediction_type", ["v_prediction", "sample"])
def test_prediction_types_give_the_epsilon_trajectory(prediction_type):
    toy = GaussianToy()
    ref = run_toy(LSBScheduler(solver="multistep"), toy, 6)
    out = run_toy(LSBScheduler(solver="multistep", prediction_type=prediction_type), toy, 6)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)  # model-side alpha_bar from float32 timesteps


def test_float32_and_bfloat16_samples():
    toy = GaussianToy()
    ref = run_toy(LSBScheduler(solver="multistep"), toy, 6)
    out32 = run_toy(LSBScheduler(solver="multistep"), toy, 6, dtype=torch.float32)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), ref, rtol=0, atol=1e-4)
    out16 = run_toy(LSBScheduler(solver="euler"), toy, 4, dtype=torch.bfloat16)
    assert out16.dtype == torch.bfloat16 and torch.isfinite(out16.float()).all()


# ------------------------------------------------------------------ schedule


def test_set_timesteps_grids():
    sched = LSBScheduler(solver="euler")
    sched.set_timesteps(8)
    grid = torch.linspace(T0, 1, 8, dtype=F64)
    assert len(sched.timesteps) == 8 and sched.timesteps.dtype == torch.float32
    torch.testing.assert_close(sched.bridge_times[:-1], grid[:-1])
    assert sched.bridge_times[-1] == sched.bridge_times[-2]  # final denoise at the last Euler noise level
    torch.testing.assert_close(sched.sigmas, (TAU * sched.bridge_times * (1 - sched.bridge_times)).sqrt())
    torch.testing.assert_close(sched.alpha_bars, 1 / (1 + sched.sigmas**2))
    torch.testing.assert_close(
        timestep_to_alpha_bar(sched.timesteps.double(), sched.alphas_cumprod), sched.alpha_bars, rtol=1e-6, atol=0
    )
    for solver in ("ddim", "multistep"):
        sched = LSBScheduler(solver=solver)
        sched.set_timesteps(4, t0=0.3, tau=2.0)
        torch.testing.assert_close(sched.bridge_times, torch.tensor([0.3, 0.475, 0.65, 0.825], dtype=F64))
        torch.testing.assert_close(sched.sigmas, (2.0 * sched.bridge_times * (1 - sched.bridge_times)).sqrt())
    assert sched.config.t0 == T0 and sched.config.tau == TAU  # overrides do not touch the config


def _check_initial_sample(sched):
    """At 4 steps the paper's initial state x_t0 = (1 - t0) x_src + sqrt(tau t0 (1 - t0)) z, which diffusers'
    forward-process API (add_noise at the first timestep: the bridge marginal from the source endpoint) also gives;
    returns the (source, noise) pair it drew."""
    sched.set_timesteps(4)
    gen = torch.Generator().manual_seed(0)
    src, noise = torch.randn(2, 2, 4, 8, 8, generator=gen)
    x = sched.prepare_initial_sample(src, noise)
    torch.testing.assert_close(x, (1 - T0) * src + math.sqrt(TAU * T0 * (1 - T0)) * noise)
    torch.testing.assert_close(sched.add_noise(src, noise, sched.timesteps[:1]), x)
    return src, noise


def test_paper_initial_state_and_add_noise():
    sched = LSBScheduler()
    src, noise = _check_initial_sample(sched)
    noisy = sched.add_noise(src, noise, sched.timesteps[[0, 2]])
    t2 = sched.bridge_times[2].item()
    torch.testing.assert_close(noisy[1], (1 - t2) * src[1] + sb_sigma(t2, TAU) * noise[1])
    # a timestep off the schedule: the source-side bridge time with that noise level
    off = sched.add_noise(src, noise, torch.tensor(100.0))
    t_off = alpha_bar_to_sb_time(timestep_to_alpha_bar(100.0, sched.alphas_cumprod), TAU, "source").item()
    assert 0 < t_off < 0.5 and 1 / (1 + sb_sigma(t_off, TAU) ** 2) == pytest.approx(sched.alphas_cumprod[100].item())
    torch.testing.assert_close(off, (1 - t_off) * src + sb_sigma(t_off, TAU) * noise)


def test_step_index_begin_index_and_len():
    sched = LSBScheduler(solver="ddim")
    assert len(sched) == 1000
    sched.set_timesteps(5)
    assert sched.step_index is None and sched.begin_index is None
    sample = torch.randn(1, 4, 4, 4)
    sched.scale_model_input(sample, sched.timesteps[0])
    assert sched.step_index == 0
    sched.step(torch.randn(2, 4, 4, 4), sched.timesteps[0], sample)
    assert sched.step_index == 1
    sched.set_timesteps(5)
    sched.set_begin_index(2)
    sched.step(torch.randn(1, 4, 4, 4), sched.timesteps[2], sample)
    assert sched.step_index == 3
    # the schedule's timesteps repeat (t and 1 - t match one SD timestep): the first match is used
    sched.set_timesteps(4)
    sched.step(torch.randn(1, 4, 4, 4), sched.timesteps[0], sample)
    assert sched.step_index == 1


# ------------------------------------------------------------------ diffusers contract


def _dummy(batch=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 4, 8, 8, generator=gen), torch.randn(2 * batch, 4, 8, 8, generator=gen)


@pytest.mark.parametrize("solver", ["euler", "ddim", "multistep"])
def test_public_api(solver):
    sched = LSBScheduler(solver=solver)
    assert sched.init_noise_sigma == 1.0 and sched.order == 1
    sample, model_output = _dummy()
    assert sched.scale_model_input(sample, 500).shape == sample.shape  # works before set_timesteps too
    sched.set_timesteps(4)
    assert sched.add_noise(sample, torch.randn_like(sample), sched.timesteps[:1]).shape == sample.shape
    x = sample
    for timestep in sched.timesteps:
        model_input = sched.scale_model_input(torch.cat([x, x]), timestep)
        assert model_input.shape == (4, 4, 8, 8)
        out = sched.step(model_output, timestep, x)
        assert isinstance(out, LSBSchedulerOutput)
        assert out.prev_sample.shape == sample.shape == out.pred_target_sample.shape == out.pred_source_sample.shape
        x = out.prev_sample
    with pytest.raises(ValueError, match="set_timesteps"):
        sched.step(model_output, sched.timesteps[-1], x)


def _run(sched, sample, model_output, return_dict=True, **kwargs):
    sched.set_timesteps(4)
    outs = []
    x = sample
    for timestep in sched.timesteps:
        out = sched.step(model_output, timestep, x, return_dict=return_dict, **kwargs)
        x = out.prev_sample if return_dict else out[0]
        outs.append(out.to_tuple() if return_dict else out)
    return outs


@pytest.mark.parametrize("solver", ["euler", "ddim", "multistep"])
def test_tuple_dict_batched_and_deterministic(solver):
    sample, model_output = _dummy()
    sched = LSBScheduler(solver=solver)
    as_dict = _run(sched, sample, model_output, guidance_scale=3.0)
    as_tuple = _run(sched, sample, model_output, return_dict=False, guidance_scale=3.0)
    again = _run(LSBScheduler(solver=solver), sample, model_output, guidance_scale=3.0)
    src, tgt = model_output.chunk(2)
    split = _run(LSBScheduler(solver=solver), sample, src, target_model_output=tgt, guidance_scale=3.0)
    for a, b, c, d in zip(as_dict, as_tuple, again, split):
        for u, v, w, z in zip(a, b, c, d):
            assert torch.equal(u, v) and torch.equal(u, w) and torch.equal(u, z)
    # a single-prompt output is used for both prompts: source and target predictors coincide
    single = _run(LSBScheduler(solver=solver), sample, src)
    assert all(torch.equal(s[1], s[2]) for s in single)


def test_from_sd_configs_keeps_keys_and_round_trips(tmp_path):
    for other in (PNDMScheduler.from_config(SD15_SCHEDULER), DDIMScheduler.from_config(SD15_SCHEDULER)):
        sched = LSBScheduler.from_config(other.config)
        assert sched.config.beta_schedule == "scaled_linear" and sched.config.beta_start == 0.00085
        torch.testing.assert_close(sched.alphas_cumprod, other.alphas_cumprod.double(), rtol=0, atol=0)
        sched.save_pretrained(tmp_path / other.__class__.__name__)
        saved = json.loads((tmp_path / other.__class__.__name__ / "scheduler_config.json").read_text())
        assert saved["_class_name"] == "LSBScheduler" and saved["steps_offset"] == 1
    v_sched = LSBScheduler.from_config({**SD15_SCHEDULER, "prediction_type": "v_prediction"}, tau=4.0, solver="ddim")
    assert v_sched.config.prediction_type == "v_prediction" and v_sched.config.tau == 4.0
    # and back to diffusers
    ddim = DDIMScheduler.from_config(v_sched.config)
    torch.testing.assert_close(ddim.alphas_cumprod.double(), v_sched.alphas_cumprod, rtol=0, atol=0)
    assert ddim.config.prediction_type == "v_prediction"
    assert DDIMScheduler in LSBScheduler().compatibles and DPMSolverMultistepScheduler in LSBScheduler().compatibles


@pytest.mark.parametrize("solver", ["euler", "ddim", "multistep"])
def test_save_pretrained_from_pretrained_same_outputs(tmp_path, solver):
    sched = LSBScheduler(solver=solver, tau=3.0, t0=0.3, noise_predictor="interpolate", prediction_type="v_prediction")
    sched.save_pretrained(tmp_path)
    loaded = LSBScheduler.from_pretrained(tmp_path)
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(sched.config)
    sample, model_output = _dummy()
    outputs = _run(sched, sample, model_output, guidance_scale=2.0)
    for a, b in zip(outputs, _run(loaded, sample, model_output, guidance_scale=2.0)):
        assert all(torch.equal(u, v) for u, v in zip(a, b))


def test_diffusers_pipeline_helpers_accept_the_scheduler():
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import retrieve_timesteps

    sched = LSBScheduler()
    timesteps, n = retrieve_timesteps(sched, 6, "cpu")
    assert n == 6 and torch.equal(timesteps, sched.timesteps)


def test_official_final_renoise():
    sample, model_output = _dummy()
    plain = _run(LSBScheduler(), sample, model_output)
    official = _run(LSBScheduler(official_final_renoise=True), sample, model_output)
    for a, b in zip(plain[:-1], official[:-1]):
        assert torch.equal(a[0], b[0])
    sched = LSBScheduler()
    a = sched.alphas_cumprod[19].item()
    eps_tgt = model_output.chunk(2)[1]
    torch.testing.assert_close(official[-1][0], a**0.5 * plain[-1][0] + (1 - a) ** 0.5 * eps_tgt)


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(solver="heun"), "solver"),
        (dict(prediction_type="flow"), "prediction_type"),
        (dict(noise_predictor="mean"), "noise_predictor"),
        (dict(tau=0.0), "tau"),
        (dict(tau=-1.0), "tau"),
        (dict(t0=0.0), "t0"),
        (dict(t0=1.0), "t0"),
        (dict(beta_schedule="cosine"), "beta_schedule"),
    ],
)
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LSBScheduler(**kwargs)


def test_set_timesteps_errors():
    sched = LSBScheduler()
    for nfe in (0, 1, 2.5):
        with pytest.raises(ValueError, match="num_inference_steps"):
            sched.set_timesteps(nfe)
    with pytest.raises(ValueError, match="t0"):
        sched.set_timesteps(4, t0=1.2)
    with pytest.raises(ValueError, match="tau"):
        sched.set_timesteps(4, tau=0.0)
    with pytest.raises(ValueError, match="set_timesteps"):
        LSBScheduler().step(torch.zeros(2, 1), 0.0, torch.zeros(1, 1))


# ------------------------------------------------------------------ the flow base (SD3 / FLUX)

SHARED_CONFIGS = Path("/work/shared/configs")


def _flow_velocities(toy, x, t):
    """The exact velocities of the toy's two prompts for a flow model, v_i = E[e | z] - E[x_i | z] at z = (1 - s) x:
    the flow state's noise is the bridge noise, so E[e | z] = (x - E[x_i | x]) / sigma_t."""
    eps_src, eps_tgt = toy.eps(x, t)
    sigma = sb_sigma(t, toy.tau)
    return eps_src - (x - sigma * eps_src), eps_tgt - (x - sigma * eps_tgt)


def run_flow_toy(scheduler, toy, nfe, guidance_scale=1.0, x=None, dtype=F64, model_levels="exact"):
    """Like ``run_toy`` on a flow base: the model gets (1 - s) x and returns velocities."""
    scheduler.set_timesteps(nfe)
    x = toy.start(scheduler.bridge_times[0].item(), XI) if x is None else x
    x = x.to(dtype)
    for timestep in scheduler.timesteps:
        z = scheduler.scale_model_input(torch.cat([x, x]), timestep)
        i = scheduler.step_index
        t, s = scheduler.bridge_times[i].item(), scheduler.flow_levels[i].item()
        torch.testing.assert_close(z[: len(x)], x * (1 - s))
        if model_levels == "timestep":  # the level the network reads from its (float32) timestep
            s_model = timestep.double().item() / scheduler.config.num_train_timesteps
            t = flow_level_to_sb_time(s_model, toy.tau, "source" if t <= 0.5 else "target").item()
        v_src, v_tgt = _flow_velocities(toy, x.double(), t)
        x = scheduler.step(torch.cat([v_src, v_tgt]).to(dtype), timestep, x, guidance_scale=guidance_scale).prev_sample
    return x


def _flow_scheduler(**kwargs):
    return LSBScheduler.from_config(FlowMatchEulerDiscreteScheduler().config, **kwargs)


def test_from_flow_match_configs_gives_the_flow_base(tmp_path):
    configs = [dict(FlowMatchEulerDiscreteScheduler().config)] + [
        json.loads((SHARED_CONFIGS / name / "scheduler.json").read_text())
        for name in ("sd3-medium", "sd35-medium", "sd35-large", "flux-dev", "flux-schnell")
    ]
    for config in configs:
        sched = LSBScheduler.from_config(config)
        assert sched.base == "flow" and sched.config.prediction_type == "flow_prediction"
        assert sched.betas is None and sched.alphas is None and sched.alphas_cumprod is None
        assert sched.config.tau == TAU and sched.config.t0 == T0 and len(sched) == 1000
        # the flow-matching keys stay (hidden) and come back to diffusers' scheduler
        sched.save_pretrained(tmp_path)
        loaded = LSBScheduler.from_pretrained(tmp_path)
        assert loaded.base == "flow"
        for lsb in (sched, loaded):
            back = FlowMatchEulerDiscreteScheduler.from_config(lsb.config)
            for key in ("shift", "use_dynamic_shifting", "base_shift", "max_shift"):
                assert back.config[key] == config.get(key, FlowMatchEulerDiscreteScheduler().config[key])
    assert LSBScheduler.from_config(configs[1], tau=2.0, solver="multistep").config.tau == 2.0
    # a model folder's scheduler/ written by diffusers' flow scheduler loads as the flow base
    FlowMatchEulerDiscreteScheduler(shift=3.0).save_pretrained(tmp_path / "scheduler")
    from_folder = LSBScheduler.from_pretrained(tmp_path, subfolder="scheduler")
    assert from_folder.base == "flow" and from_folder.config.shift == 3.0
    assert FlowMatchEulerDiscreteScheduler in LSBScheduler().compatibles


def test_base_detection_and_round_trips_keep_the_base():
    sd15 = PNDMScheduler.from_config(SD15_SCHEDULER)
    flow = FlowMatchEulerDiscreteScheduler(shift=3.0)
    assert config_base(sd15.config) == "vp" and config_base(flow.config) == "flow"
    assert config_base(DPMSolverMultistepScheduler().config) == "vp"  # has flow_shift / use_flow_sigmas keys
    dpm_flow = DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction")
    assert config_base(dpm_flow.config) == "flow" and LSBScheduler.from_config(dpm_flow.config).base == "flow"
    assert config_base({"_class_name": "FlowMatchHeunDiscreteScheduler"}) == "flow"
    assert config_base({"_class_name": "LSBScheduler", "prediction_type": "flow_prediction"}) == "flow"
    assert LSBScheduler.from_config(sd15.config).base == "vp" and LSBScheduler().base == "vp"
    assert LSBScheduler.from_config(flow.config, prediction_type="epsilon").base == "vp"  # explicit wins
    # a default (VP) LSB config passed through the flow scheduler stays VP, and the flow base survives DDIM
    for sched in (LSBScheduler(), _flow_scheduler()):
        for other in (FlowMatchEulerDiscreteScheduler, DDIMScheduler, DPMSolverMultistepScheduler):
            assert LSBScheduler.from_config(other.from_config(sched.config).config).base == sched.base
    with pytest.raises(ValueError, match="config"):
        config_base("scheduler_config.json")


def test_flow_schedule_timesteps_and_model_input():
    sched = _flow_scheduler(solver="ddim")
    with pytest.raises(ValueError, match="timestep"):
        sched.scale_model_input(torch.ones(1))
    torch.testing.assert_close(sched.scale_model_input(torch.ones(2), 250.0), torch.full((2,), 0.75))
    sched.set_timesteps(5, device="cpu")
    grid = torch.linspace(T0, 1, 6, dtype=F64)[:-1]
    torch.testing.assert_close(sched.bridge_times, grid)
    sigma = (TAU * grid * (1 - grid)).sqrt()
    torch.testing.assert_close(sched.sigmas, sigma)
    torch.testing.assert_close(sched.flow_levels, sigma / (1 + sigma))
    assert sched.timesteps.dtype == torch.float32
    torch.testing.assert_close(sched.timesteps, (1000 * sched.flow_levels).float())
    x = torch.randn(1, 4, 4, 4)
    for i, timestep in enumerate(sched.timesteps):
        torch.testing.assert_close(sched.scale_model_input(x, timestep), x * (1 - sched.flow_levels[i].item()))
        sched.step(torch.randn(2, 4, 4, 4), timestep, x)
    # the VP base's SD timesteps differ, the bridge grid does not
    vp = LSBScheduler(solver="ddim")
    vp.set_timesteps(5)
    assert torch.equal(vp.bridge_times, sched.bridge_times) and not torch.allclose(vp.timesteps, sched.timesteps)


@pytest.mark.parametrize("solver", ["euler", "ddim", "multistep"])
@pytest.mark.parametrize("noise_predictor,guidance_scale", [("interpolate", 1.0), ("switch", 3.0)])
def test_flow_base_transports_as_the_vp_base(solver, noise_predictor, guidance_scale):
    """The same analytic bridge on both bases: exact eps (VP) and exact velocity (flow) give the same predictors,
    so the whole trajectory agrees to float tolerance, and the flow base reaches the exact target like the VP one."""
    toy = GaussianToy()
    for nfe in (2, 5, 16):
        vp = run_toy(LSBScheduler(solver=solver, noise_predictor=noise_predictor), toy, nfe, guidance_scale)
        flow = run_flow_toy(_flow_scheduler(solver=solver, noise_predictor=noise_predictor), toy, nfe, guidance_scale)
        torch.testing.assert_close(flow, vp, rtol=0, atol=2e-5)  # VP model: alphabar of the float32 timestep
    if noise_predictor == "interpolate":
        sched = _flow_scheduler(solver=solver, noise_predictor="interpolate")
        errors = torch.tensor([(run_flow_toy(sched, toy, n) - toy.end(XI)).abs().max().item() for n in NFES])
        torch.testing.assert_close(errors, torch.tensor([toy_error(solver, n) for n in NFES]), rtol=1e-3, atol=1e-5)
        assert errors[-1] < errors[0] / 5


def test_flow_base_equals_vp_base_exactly_with_exact_levels():
    """Both models evaluated at the scheduler's exact matched level: the trajectories agree to 1e-12."""
    toy = GaussianToy()
    vp_sched, flow_sched = LSBScheduler(solver="multistep"), _flow_scheduler(solver="multistep")
    vp_sched.set_timesteps(6)
    flow_sched.set_timesteps(6)
    x_vp = x_flow = toy.start(T0, XI)
    for tv, tf in zip(vp_sched.timesteps, flow_sched.timesteps):
        t = vp_sched.bridge_times[vp_sched._step_index or 0].item()
        out_vp = vp_sched.step(torch.cat(toy.eps(x_vp, t)), tv, x_vp)
        out_flow = flow_sched.step(torch.cat(_flow_velocities(toy, x_flow, t)), tf, x_flow)
        for a, b in zip(out_vp.to_tuple(), out_flow.to_tuple()):
            torch.testing.assert_close(b, a, rtol=0, atol=1e-12)
        x_vp, x_flow = out_vp.prev_sample, out_flow.prev_sample
    # and with the level each network reads off its float32 timestep
    out = run_flow_toy(_flow_scheduler(solver="multistep"), toy, 6, model_levels="timestep")
    torch.testing.assert_close(out, x_flow, rtol=0, atol=1e-5)


def test_flow_base_point_masses_and_dtypes():
    toy = GaussianToy(a=-1.0, b=2.0, s0=0.0, s1=0.0)
    for solver in ("euler", "ddim", "multistep"):
        out = run_flow_toy(_flow_scheduler(solver=solver, noise_predictor="interpolate"), toy, 4)
        assert (out - 2.0).abs().max().item() < 1e-9
    ref = run_flow_toy(_flow_scheduler(solver="multistep"), GaussianToy(), 6)
    out32 = run_flow_toy(_flow_scheduler(solver="multistep"), GaussianToy(), 6, dtype=torch.float32)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), ref, rtol=0, atol=1e-4)
    out16 = run_flow_toy(_flow_scheduler(), GaussianToy(), 4, dtype=torch.bfloat16)
    assert out16.dtype == torch.bfloat16 and torch.isfinite(out16.float()).all()


def test_flow_base_add_noise_and_initial_sample():
    sched = _flow_scheduler()
    src, noise = _check_initial_sample(sched)
    # off the schedule: the source-side bridge time whose flow level is timestep / 1000
    off = sched.add_noise(src, noise, torch.tensor(300.0))
    t_off = flow_level_to_sb_time(0.3, TAU, "source").item()
    assert 0 < t_off < 0.5 and flow_level(t_off, TAU) == pytest.approx(0.3)
    torch.testing.assert_close(off, (1 - t_off) * src + sb_sigma(t_off, TAU) * noise)


def test_flow_base_config_errors():
    with pytest.raises(ValueError, match="trained_betas"):
        LSBScheduler(prediction_type="flow_prediction", trained_betas=[0.1, 0.2])
    with pytest.raises(ValueError, match="official_final_renoise"):
        _flow_scheduler(official_final_renoise=True)
    # a flow config without any VP field builds and runs
    sched = LSBScheduler.from_config({"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0})
    sched.set_timesteps(3)
    assert sched.base == "flow" and len(sched.timesteps) == 3


class PromptGaussians:
    """A text-conditional model that learned data N(mu_i, c_i^2) under prompt i (0 = source, 1 = target), in closed
    form on each base: a VP model's exact noise prediction at y = sqrt(ab) x0 + sqrt(1 - ab) e, and a flow model's
    exact velocity E[e - x0 | z] at z = (1 - s) x0 + s e. Two different formulas, one per base."""

    def __init__(self, mus=(-1.0, 1.5), cs=(0.8, 0.5)):
        self.mus, self.cs = mus, cs

    def eps(self, y, ab):
        return torch.cat(
            [(1 - ab) ** 0.5 * (y - ab**0.5 * m) / (ab * c**2 + 1 - ab) for m, c in zip(self.mus, self.cs)]
        )

    def velocity(self, z, s):
        out = []
        for m, c in zip(self.mus, self.cs):
            r = z - (1 - s) * m
            var = (1 - s) ** 2 * c**2 + s**2
            out.append(s * r / var - (m + (1 - s) * c**2 * r / var))
        return torch.cat(out)


@pytest.mark.parametrize("solver", ["euler", "ddim", "multistep"])
def test_closed_form_vp_and_flow_models_give_one_trajectory(solver):
    """The same Gaussian data model on both bases, each queried in its own parametrisation at the level the scheduler
    matched: the predictors and so the whole trajectories agree (1e-12 at the scheduler's exact levels; 1e-5 when
    each network reads its level off its float32 timestep)."""
    model = PromptGaussians()
    for exact in (True, False):
        vp, flow = LSBScheduler(solver=solver), _flow_scheduler(solver=solver)
        vp.set_timesteps(6)
        flow.set_timesteps(6)
        x_vp = x_flow = toy_start = GaussianToy().start(T0, XI)
        for tv, tf in zip(vp.timesteps, flow.timesteps):
            y = vp.scale_model_input(torch.cat([x_vp, x_vp]), tv)[: len(x_vp)]
            z = flow.scale_model_input(torch.cat([x_flow, x_flow]), tf)[: len(x_flow)]
            i = vp.step_index
            ab = vp.alpha_bars[i].item() if exact else timestep_to_alpha_bar(tv.double(), vp.alphas_cumprod).item()
            s = flow.flow_levels[i].item() if exact else tf.double().item() / 1000
            out_vp = vp.step(model.eps(y, ab), tv, x_vp, guidance_scale=2.0)
            out_flow = flow.step(model.velocity(z, s), tf, x_flow, guidance_scale=2.0)
            for a, b in zip(out_vp.to_tuple(), out_flow.to_tuple()):
                torch.testing.assert_close(b, a, rtol=0, atol=1e-12 if exact else 1e-5)
            x_vp, x_flow = out_vp.prev_sample, out_flow.prev_sample
        assert (x_flow - toy_start).abs().max() > 0.5  # the translation moved the samples
