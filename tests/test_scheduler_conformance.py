"""diffusers' scheduler contract, checked for every scheduler in lsb.schedulers (LSB on both bases and the bridges).

The contract: config save / load and from_config round trips, compatibles, step shapes and determinism,
set_timesteps, add_noise, trained_betas, scale_model_input, step_index / begin_index, dict vs tuple outputs and the
public attributes pipelines read. Where a scheduler must differ (a bridge needs the degraded endpoint x_T, DDM's
network has several heads, ...) the class docstring says so under "Differences from diffusers' scheduler contract",
and the case below passes what the scheduler needs.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.configuration_utils import ConfigMixin
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import retrieve_timesteps
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput, DummyObject

import lsb.schedulers as lsb_schedulers
from lsb.schedulers import (
    DBIMScheduler,
    DDBMScheduler,
    DDMScheduler,
    DiffIRScheduler,
    I2SBScheduler,
    LSBScheduler,
)

torch.set_num_threads(1)
SHAPE = (2, 3, 8, 8)
DIFFERENCES = "Differences from diffusers' scheduler contract"


@dataclass
class Case:
    name: str
    cls: type
    config: dict = field(default_factory=dict)
    nfe: int = 4  # the num_inference_steps given to set_timesteps
    from_flow_config: bool = False  # built with from_config of a FlowMatchEulerDiscreteScheduler config
    x_T: bool = False  # step / add_noise take the degraded endpoint
    heads: int = 1  # model_output channels = heads * sample channels (DDM)
    prompts: int = 1  # model_output batch = prompts * sample batch (LSB: [source; target])
    trained_betas: int | None = None  # length of a trained_betas array the scheduler takes (None: no such config)
    add_noise_kwargs: dict = field(default_factory=dict)

    def make(self, **overrides):
        if self.from_flow_config:
            return self.cls.from_config(FlowMatchEulerDiscreteScheduler(shift=3.0).config, **self.config, **overrides)
        return self.cls(**self.config, **overrides)

    def calls(self, sched) -> int:
        return len(sched.timesteps)


CASES = [
    Case("lsb-vp-euler", LSBScheduler, {"tau": 0.35, "t0": 0.02}, trained_betas=6),
    Case("lsb-vp-ddim", LSBScheduler, {"solver": "ddim", "prediction_type": "v_prediction"}, trained_betas=6),
    Case("lsb-vp-multistep", LSBScheduler, {"solver": "multistep", "noise_predictor": "interpolate"}, trained_betas=6),
    Case("lsb-flow-euler", LSBScheduler, {"tau": 0.35}, from_flow_config=True),
    Case("lsb-flow-multistep", LSBScheduler, {"solver": "multistep"}, from_flow_config=True),
    Case("i2sb", I2SBScheduler, {}, x_T=True),
    Case("i2sb-ot-ode", I2SBScheduler, {"ot_ode": True, "prediction_type": "epsilon"}, x_T=True),
    Case("ddbm-vp", DDBMScheduler, {}, nfe=2, x_T=True),
    Case("ddbm-ve", DDBMScheduler, {"schedule": "ve", "s_churn": 0.0}, nfe=2, x_T=True),
    Case("dbim-vp", DBIMScheduler, {}, x_T=True),
    Case("dbim-i2sb-eta1", DBIMScheduler, {"schedule": "i2sb", "eta": 1.0}, x_T=True),
    Case("dbim-order3", DBIMScheduler, {"solver_order": 3}, nfe=5, x_T=True),
    Case("ddm-constant", DDMScheduler, {}, heads=2),
    Case("ddm-linear", DDMScheduler, {"attenuation": "linear", "eta": 0.5}, heads=3),
    Case("diffir", DiffIRScheduler, {}, trained_betas=4),
]
IDS = [c.name for c in CASES]


def _tensor(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _inputs(case: Case, seed: int = 0):
    """(sample, x_T, model_output) for one call."""
    sample, x_T = _tensor(SHAPE, seed), _tensor(SHAPE, seed + 1)
    b, c, h, w = SHAPE
    model_output = 0.5 * _tensor((case.prompts * b, case.heads * c, h, w), seed + 2)
    return sample, x_T, model_output


def _step_kwargs(sched, case: Case, x_T, seed: int = 0) -> dict:
    kwargs = {}
    if case.x_T:
        kwargs["x_T"] = x_T
    if "generator" in inspect.signature(sched.step).parameters:
        kwargs["generator"] = torch.Generator().manual_seed(seed)
    return kwargs


def _initial(sched, case: Case, sample, x_T):
    if case.x_T:
        return sched.prepare_initial_sample(x_T)
    if isinstance(sched, LSBScheduler):
        return sched.prepare_initial_sample(sample, generator=torch.Generator().manual_seed(7))
    return sample * sched.init_noise_sigma


def _run(sched, case: Case, seed: int = 0, return_dict: bool = True, begin_index: int | None = None):
    """A whole schedule, pipeline-style; returns every call's outputs as tuples."""
    sched.set_timesteps(case.nfe)
    if begin_index is not None:
        sched.set_begin_index(begin_index)
    sample, x_T, model_output = _inputs(case, seed)
    x = _initial(sched, case, sample, x_T)
    kwargs = _step_kwargs(sched, case, x_T, seed)
    timesteps = sched.timesteps[begin_index or 0 :]
    outputs = []
    for k, timestep in enumerate(timesteps):
        model_input = sched.scale_model_input(x, timestep)
        assert model_input.shape == x.shape
        out = sched.step(model_output * (1 + 0.1 * k), timestep, x, return_dict=return_dict, **kwargs)
        out = out.to_tuple() if return_dict else out
        outputs.append(out)
        x = out[0]
    return outputs


def _public(config) -> dict:
    return {k: v for k, v in config.items() if not k.startswith("_")}


def _same(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert len(u) == len(v)
        for p, q in zip(u, v):
            assert torch.equal(p, q)


# ------------------------------------------------------------------ config


def test_every_scheduler_has_a_case():
    classes = {
        obj for obj in vars(lsb_schedulers).values() if isinstance(obj, type) and issubclass(obj, SchedulerMixin)
    }
    assert classes == {c.cls for c in CASES}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_public_api(case):
    sched = case.make()
    assert isinstance(sched, SchedulerMixin) and isinstance(sched, ConfigMixin)
    assert sched.init_noise_sigma == 1.0 and isinstance(sched.order, int) and sched.order >= 1
    assert {"model_output", "timestep", "sample", "return_dict"} <= set(inspect.signature(sched.step).parameters)
    assert "device" in inspect.signature(sched.set_timesteps).parameters
    init = inspect.signature(case.cls.__init__).parameters
    assert "kwargs" not in init and not case.cls._deprecated_kwargs  # diffusers' deprecated-kwargs rule
    if "__len__" in vars(case.cls):
        assert len(sched) == sched.config.num_train_timesteps
    # config values are read through `config`; unknown attributes raise diffusers' AttributeError
    sched.extra_attribute = 3
    assert sched.extra_attribute == 3
    with pytest.raises(AttributeError, match=f"'{case.cls.__name__}' object has no attribute 'does_not_exist'"):
        sched.does_not_exist  # noqa: B018
    assert DIFFERENCES in case.cls.__doc__  # where the scheduler must differ, and why


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_save_pretrained_round_trip_same_config_and_outputs(case, tmp_path):
    sched = case.make()
    sched.save_pretrained(tmp_path)
    assert (tmp_path / "scheduler_config.json").is_file()
    loaded = case.cls.from_pretrained(tmp_path)
    assert _public(loaded.config) == _public(sched.config)
    _same(_run(sched, case), _run(loaded, case))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_from_config_round_trip_and_overrides(case):
    sched = case.make()
    again = case.cls.from_config(sched.config)
    assert _public(again.config) == _public(sched.config)
    _same(_run(sched, case), _run(again, case))
    if case.cls is LSBScheduler:
        assert again.base == sched.base == ("flow" if case.from_flow_config else "vp")
    # a keyword overrides the stored value
    key, value = next((k, v) for k, v in _public(sched.config).items() if isinstance(v, float) and v != 0.0)
    changed = case.cls.from_config(sched.config, **{key: value / 2})
    assert changed.config[key] == value / 2 and sched.config[key] == value


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_compatibles(case):
    sched = case.make()
    compatibles = [c for c in sched.compatibles if not isinstance(c, DummyObject)]  # optional deps (torchsde)
    if case.cls is not LSBScheduler:
        assert compatibles == [] and case.cls._compatibles == []  # bridges: no drop-in (documented)
        return
    assert FlowMatchEulerDiscreteScheduler in compatibles and len(compatibles) >= 15
    original = _public(sched.config)
    init_keys = set(inspect.signature(case.cls.__init__).parameters)
    for other_cls in compatibles:
        other = other_cls.from_config(sched.config)
        back = case.cls.from_config(other.config)
        assert {k: v for k, v in _public(back.config).items() if k in original} == original, other_cls.__name__
        # whatever the other class added is hidden config, never one of our init arguments
        assert not (set(_public(back.config)) - set(original)) & init_keys
        assert back.base == sched.base
    _same(_run(sched, case), _run(back, case))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_trained_betas(case, tmp_path):
    if case.trained_betas is None:
        assert "trained_betas" not in inspect.signature(case.cls.__init__).parameters or case.from_flow_config
        if case.from_flow_config:  # the flow base has no beta schedule, and says so
            with pytest.raises(ValueError, match="trained_betas"):
                case.make(trained_betas=[0.1, 0.2])
        else:
            assert "trained_betas" in case.cls.__doc__  # the Differences section says why there is none
        return
    betas = np.linspace(0.05, 0.4, case.trained_betas)
    sched = case.make(trained_betas=betas)
    sched.save_pretrained(tmp_path)
    loaded = case.cls.from_pretrained(tmp_path)
    for s in (sched, loaded):
        assert np.allclose(np.asarray(s.betas, dtype=np.float64), betas, rtol=1e-6, atol=0)
        assert np.allclose(np.asarray(s.alphas_cumprod, dtype=np.float64), np.cumprod(1 - betas), rtol=1e-6, atol=0)
    assert np.asarray(sched.betas).tolist() == np.asarray(loaded.betas).tolist()
    _same(_run(sched, case), _run(loaded, case))
    # the betas are used: another table gives another schedule
    other = case.make(trained_betas=betas * 0.5)
    other.set_timesteps(case.nfe)
    sched.set_timesteps(case.nfe)
    moved = not torch.equal(other.timesteps, sched.timesteps) or not np.allclose(
        other.alphas_cumprod, sched.alphas_cumprod
    )
    assert moved


# ------------------------------------------------------------------ schedule and steps


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_set_timesteps(case):
    sched = case.make()
    assert sched.step_index is None and sched.begin_index is None
    sched.set_timesteps(case.nfe, device="cpu")
    timesteps = sched.timesteps
    assert timesteps.ndim == 1 and len(timesteps) >= case.nfe - 1 and torch.isfinite(timesteps.double()).all()
    if case.cls in (LSBScheduler, I2SBScheduler, DBIMScheduler, DiffIRScheduler):
        assert len(timesteps) == case.nfe  # num_inference_steps is the NFE
    # diffusers' pipeline helper drives it like any scheduler
    again, n = retrieve_timesteps(case.make(), case.nfe, "cpu")
    assert torch.equal(again, timesteps) and n == case.nfe
    # a new schedule resets the counters
    sample, x_T, model_output = _inputs(case)
    sched.step(model_output, timesteps[0], _initial(sched, case, sample, x_T), **_step_kwargs(sched, case, x_T))
    assert sched.step_index == 1
    sched.set_timesteps(case.nfe)
    assert sched.step_index is None and sched.begin_index is None


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_step_shapes_dtypes_and_determinism(case):
    sched = case.make()
    sched.set_timesteps(case.nfe)
    sample, x_T, model_output = _inputs(case)
    x = _initial(sched, case, sample, x_T)
    out0 = sched.step(model_output, sched.timesteps[0], x, **_step_kwargs(sched, case, x_T)).prev_sample
    out1 = sched.step(model_output, sched.timesteps[1], out0, **_step_kwargs(sched, case, x_T)).prev_sample
    assert out0.shape == out1.shape == sample.shape and out0.dtype == out1.dtype == sample.dtype
    assert torch.isfinite(out0).all() and torch.isfinite(out1).all()
    # same inputs and seed: the same trajectory; a stochastic sampler follows its generator
    first = _run(case.make(), case, seed=0)
    _same(first, _run(case.make(), case, seed=0))
    assert len(first) == case.calls(sched)
    if "generator" in inspect.signature(sched.step).parameters:
        s_a, s_b = case.make(), case.make()
        for s in (s_a, s_b):
            s.set_timesteps(case.nfe)
        x_a = x_b = _initial(s_a, case, sample, x_T)
        kw_a = {**_step_kwargs(s_a, case, x_T), "generator": torch.Generator().manual_seed(1)}
        kw_b = {**_step_kwargs(s_b, case, x_T), "generator": torch.Generator().manual_seed(2)}
        differ = False
        for timestep in s_a.timesteps:
            x_a = s_a.step(model_output, timestep, x_a, **kw_a).prev_sample
            x_b = s_b.step(model_output, timestep, x_b, **kw_b).prev_sample
            differ = differ or not torch.equal(x_a, x_b)
        stochastic = case.name in (
            "i2sb",
            "ddbm-vp",
            "dbim-vp",
            "dbim-i2sb-eta1",
            "dbim-order3",
            "ddm-constant",
            "ddm-linear",
        )
        assert differ == stochastic
    # float32 in, float32 out; half in, half out
    half_sched = case.make()
    half_sched.set_timesteps(case.nfe)
    x16 = _initial(half_sched, case, sample, x_T).to(torch.bfloat16)
    kwargs = _step_kwargs(half_sched, case, x_T)
    if case.x_T:
        kwargs["x_T"] = x_T.to(torch.bfloat16)
    out16 = half_sched.step(model_output.to(torch.bfloat16), half_sched.timesteps[0], x16, **kwargs).prev_sample
    assert out16.dtype == torch.bfloat16 and torch.isfinite(out16.float()).all()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_output_dict_and_tuple_agree(case):
    as_dict = _run(case.make(), case, return_dict=True)
    as_tuple = _run(case.make(), case, return_dict=False)
    _same(as_dict, as_tuple)
    sched = case.make()
    sched.set_timesteps(case.nfe)
    sample, x_T, model_output = _inputs(case)
    out = sched.step(
        model_output, sched.timesteps[0], _initial(sched, case, sample, x_T), **_step_kwargs(sched, case, x_T)
    )
    assert (
        isinstance(out, BaseOutput)
        and torch.equal(out.prev_sample, out[0])
        and torch.equal(out.prev_sample, out["prev_sample"])
    )


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_step_index_and_begin_index(case):
    sched = case.make()
    sched.set_timesteps(case.nfe)
    sample, x_T, model_output = _inputs(case)
    x = _initial(sched, case, sample, x_T)
    for k, timestep in enumerate(sched.timesteps):
        assert sched.step_index == (None if k == 0 else k)
        x = sched.step(model_output, timestep, x, **_step_kwargs(sched, case, x_T)).prev_sample
    assert sched.step_index == len(sched.timesteps)
    # img2img-style start: begin_index k makes the first call the k-th of the schedule (k a multiple of `order`,
    # as diffusers' img2img pipelines set it: t_start * order)
    begin = sched.order
    sched = case.make()
    sched.set_timesteps(case.nfe)
    sched.set_begin_index(begin)
    assert sched.begin_index == begin and sched.step_index is None
    sched.step(model_output, sched.timesteps[begin], x, **_step_kwargs(sched, case, x_T))
    assert sched.step_index == begin + 1
    assert len(_run(case.make(), case, begin_index=begin)) == len(sched.timesteps) - begin


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_no_step_past_the_schedule(case):
    sched = case.make()
    if case.cls is DiffIRScheduler:  # schedule set at construction, steps keyed by timestep (documented)
        return
    sample, x_T, model_output = _inputs(case)
    with pytest.raises(ValueError, match="set_timesteps"):
        sched.step(model_output, 0.0, sample, **_step_kwargs(sched, case, x_T))
    sched.set_timesteps(case.nfe)
    sample, x_T, model_output = _inputs(case)
    x = _initial(sched, case, sample, x_T)
    for timestep in sched.timesteps:
        x = sched.step(model_output, timestep, x, **_step_kwargs(sched, case, x_T)).prev_sample
    with pytest.raises(ValueError, match="calls of the schedule"):
        sched.step(model_output, sched.timesteps[-1], x, **_step_kwargs(sched, case, x_T))


@pytest.mark.parametrize("case", [c for c in CASES if c.cls in (DDBMScheduler, DBIMScheduler)], ids=lambda c: c.name)
def test_bridge_step_without_x_T_is_refused(case):
    sched = case.make()
    sched.set_timesteps(case.nfe)
    sample, _, model_output = _inputs(case)
    with pytest.raises(ValueError, match="x_T"):
        sched.step(model_output, sched.timesteps[0], sample)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_scale_model_input(case):
    sched = case.make()
    sample = _tensor(SHAPE, 3)
    before = sched.scale_model_input(sample, sched.timesteps[0] if len(sched.timesteps) else 500.0)
    assert before.shape == sample.shape and before.dtype == sample.dtype
    sched.set_timesteps(case.nfe)
    for timestep in sched.timesteps[:2]:
        scaled = sched.scale_model_input(sample, timestep)
        assert scaled.shape == sample.shape and torch.isfinite(scaled).all()
    # calling it does not advance the schedule
    index = sched.step_index
    sched.scale_model_input(sample, sched.timesteps[0])
    assert sched.step_index == index


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_add_noise(case):
    sched = case.make()
    sched.set_timesteps(case.nfe)
    sample, x_T, _ = _inputs(case)
    noise = _tensor(SHAPE, 9)
    extra = {"x_T": x_T} if case.x_T else {}
    if case.name == "ddm-linear":
        extra["K"] = 0.1 * _tensor(SHAPE, 10)
    timesteps = sched.timesteps
    t = timesteps[min(1, len(timesteps) - 1)]
    one = sched.add_noise(sample, noise, t[None], **extra)
    assert one.shape == sample.shape and one.dtype == sample.dtype and torch.isfinite(one).all()
    per_sample = sched.add_noise(sample, noise, timesteps[:2], **extra)  # one timestep per sample
    assert per_sample.shape == sample.shape
    torch.testing.assert_close(per_sample[1], sched.add_noise(sample, noise, timesteps[1:2], **extra)[1])
    # linear in the noise: the noise-free draw plus a noise term
    zero = sched.add_noise(sample, torch.zeros_like(noise), t[None], **extra)
    double = sched.add_noise(sample, 2 * noise, t[None], **extra)
    torch.testing.assert_close(double - zero, 2 * (one - zero), rtol=1e-5, atol=1e-5)


def test_ddbm_begin_index_inside_a_heun_interval_is_refused():
    sched = DDBMScheduler(s_churn=0.0)
    sched.set_timesteps(3)
    sched.set_begin_index(1)  # the second Heun call of the first interval
    sample, x_T, model_output = _inputs(CASES[IDS.index("ddbm-ve")])
    with pytest.raises(ValueError, match="multiple of `order`"):
        sched.step(model_output, sched.timesteps[1], sample, x_T=x_T)
