"""DiffIR: models, the 4-step prior diffusion, two-stage training with resume, and DiffIRPipeline."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import PIL.Image
import pytest
import torch

import lsb
from lsb.io.images import ImageInputError
from lsb.models.diffir import CPENS1, CPENS2, DIRformer, PriorDenoiser
from lsb.schedulers import DiffIRScheduler
from lsb.training import diffir as tr

TINY = dict(dim=8, num_blocks=(1, 1), heads=(1, 2), num_refinement_blocks=1, prior_dim=16)
TINY_RECIPE = dataclasses.replace(
    tr.DiffIRRecipe(),
    dim=8,
    num_blocks=(1, 1),
    heads=(1, 2),
    prior_dim=16,
    cpen_width=8,
    cache_size=16,
    batch_size=2,
    checkpoint_every=3,
    warmup=0,
    workers=1,
    steps=4,
)


def _public(config) -> dict:
    return json.loads(json.dumps({k: v for k, v in config.items() if not k.startswith("_")}))


def tiny_models(task="inpaint", seed=0, prior_dim=16):
    ch = 4 if task == "inpaint" else 3
    torch.manual_seed(seed)
    g = DIRformer(in_channels=ch, **{**TINY, "prior_dim": prior_dim})
    if not prior_dim:
        return {"dirformer": g}
    return {
        "dirformer": g,
        "cpen": CPENS2(in_channels=ch, width=8, prior_dim=prior_dim),
        "denoiser": PriorDenoiser(prior_dim=prior_dim),
        "scheduler": DiffIRScheduler(),
    }


def tiny_pipe(task="inpaint", prior_dim=16):
    pipe = lsb.DiffIRPipeline(**tiny_models(task, prior_dim=prior_dim), task=task)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ------------------------------------------------------------------------------------ models
@pytest.mark.parametrize("ch", [3, 4])
def test_model_shapes(ch):
    x, gt = torch.randn(2, ch, 64, 64), torch.randn(2, 3, 64, 64)
    c1, c2 = CPENS1(in_channels=ch, width=8, prior_dim=16), CPENS2(in_channels=ch, width=8, prior_dim=16)
    z, d = c1(x, gt), c2(x)
    assert z.shape == d.shape == (2, 16)
    assert PriorDenoiser(prior_dim=16)(z, 3, d).shape == (2, 16)
    g = DIRformer(in_channels=ch, **TINY)
    assert g(x, z).shape == (2, 3, 64, 64)
    assert DIRformer(in_channels=ch, **{**TINY, "prior_dim": 0})(x).shape == (2, 3, 64, 64)
    # fully convolutional: other sizes that are multiples of `multiple` work too
    assert g(torch.randn(1, ch, 32, 48), z[:1]).shape == (1, 3, 32, 48)


def test_default_sizes_stay_small():
    r = tr.DiffIRRecipe()
    n = lsb.models.diffir.count_parameters(
        r.dirformer("inpaint"), r.cpen_s1("inpaint"), r.cpen_s2("inpaint"), r.denoiser()
    )
    assert n < 2_000_000


def test_model_input_errors():
    g = DIRformer(in_channels=3, **TINY)
    with pytest.raises(ValueError, match="channels"):
        g(torch.randn(1, 4, 64, 64), torch.randn(1, 16))
    with pytest.raises(ValueError, match="multiples"):
        g(torch.randn(1, 3, 62, 62), torch.randn(1, 16))
    with pytest.raises(ValueError, match="pass `prior`"):
        g(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="shape"):
        g(torch.randn(2, 3, 64, 64), torch.randn(1, 16))
    with pytest.raises(ValueError, match="without a prior"):
        DIRformer(in_channels=3, **{**TINY, "prior_dim": 0})(torch.randn(1, 3, 64, 64), torch.randn(1, 16))
    with pytest.raises(ValueError, match="differ in size"):
        CPENS1(in_channels=3, width=8, prior_dim=16)(torch.randn(1, 3, 64, 64), torch.randn(1, 3, 32, 32))


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    x, gt = torch.randn(1, 4, 64, 64), torch.randn(1, 3, 64, 64)
    for m, args in [
        (CPENS1(in_channels=4, width=8, prior_dim=16), (x, gt)),
        (CPENS2(in_channels=4, width=8, prior_dim=16), (x,)),
        (PriorDenoiser(prior_dim=16), (torch.randn(1, 16), 2, torch.randn(1, 16))),
        (DIRformer(in_channels=4, **TINY), (x, torch.randn(1, 16))),
    ]:
        d = tmp_path / type(m).__name__
        m.save_pretrained(d)
        assert (d / "diffusion_pytorch_model.safetensors").is_file()
        m2 = type(m).from_pretrained(d)
        assert _public(m2.config) == _public(m.config)
        torch.testing.assert_close(m2(*args), m(*args))


def test_prior_modulates_every_block():
    torch.manual_seed(0)
    g = DIRformer(in_channels=3, **TINY)
    x = torch.randn(2, 3, 64, 64)
    z1, z2 = torch.rand(2, 16), torch.rand(2, 16)
    assert (g(x, z1) - g(x, z2)).abs().max() > 1e-3  # a different prior, a different restoration
    g(x, z1).square().mean().backward()
    mods = [m for m in g.modules() if isinstance(m, lsb.models.diffir._Modulation)]
    assert len(mods) == 2 * (1 + 1 + 1 + 1)  # DMTA + DGFN in each of enc1, bottleneck, dec1, refinement
    assert all(m.kernel.weight.grad is not None and m.kernel.weight.grad.abs().sum() > 0 for m in mods)
    # the modulation is F' = (W1 Z) * F + W2 Z after the LayerNorm
    m = mods[0]
    f, z = torch.randn(2, 8, 4, 4), torch.randn(2, 16)
    w1, w2 = m.kernel.weight[:8], m.kernel.weight[8:]
    torch.testing.assert_close(m(f, z), (z @ w1.T)[:, :, None, None] * f + (z @ w2.T)[:, :, None, None])


def test_dmta_is_channel_attention_with_normalised_qk():
    torch.manual_seed(0)
    att = lsb.models.diffir.DMTA(8, 2, prior_dim=0)
    x = torch.randn(1, 8, 4, 4)
    q, k, v = att.qkv_dw(att.qkv(x)).chunk(3, dim=1)
    out = []
    for h in range(2):  # an independent per-head loop
        qh, kh, vh = (t[0, 4 * h : 4 * h + 4].reshape(4, 16) for t in (q, k, v))
        qh, kh = qh / qh.norm(dim=1, keepdim=True), kh / kh.norm(dim=1, keepdim=True)
        a = torch.softmax(qh @ kh.T * att.temperature[h], dim=-1)  # 4 x 4: channels x channels
        out.append(a @ vh)
    ref = att.proj(torch.cat(out).reshape(1, 8, 4, 4))
    torch.testing.assert_close(att(x), ref)


def test_denoiser_time_input():
    den = PriorDenoiser(prior_dim=4, n_res=0)
    z, d = torch.zeros(1, 4), torch.zeros(1, 4)
    lin = den.mlp[0]
    expected = torch.nn.functional.leaky_relu(lin.bias + lin.weight[:, 4] * (3 / 40), 0.1)
    torch.testing.assert_close(den(z, 3, d)[0], expected)  # time enters as the raw scalar t / (10 T)


# --------------------------------------------------------------------------------- scheduler
def test_scheduler_schedule_matches_paper():
    s = DiffIRScheduler()
    np.testing.assert_allclose(s.betas, [0.1, 0.2944, 0.5907, 0.99], atol=6e-4)
    np.testing.assert_allclose(s.alphas_cumprod, [0.9, 0.6350, 0.2599, 0.0026], atol=5e-4)
    s.set_timesteps(4)
    assert s.timesteps.tolist() == [3, 2, 1, 0]
    s.set_timesteps(2)
    assert s.timesteps.tolist() == [3, 0]
    for bad in (0, 5, 2.0, True):
        with pytest.raises(ValueError, match="num_inference_steps"):
            s.set_timesteps(bad)


@pytest.mark.parametrize("t,prev", [(3, 2), (2, 1), (1, 0), (0, -1), (3, 0), (3, -1)])
def test_posterior_mean_against_monte_carlo(t, prev):
    """c1, c2 against a least-squares regression of Z_prev on (Z_0, Z_t) under the forward process."""
    s = DiffIRScheduler()
    c1, c2 = s.posterior_coefficients(t, prev)
    rng = np.random.default_rng(0)
    n = 400_000
    ab = lambda i: 1.0 if i < 0 else float(np.prod(1 - s.betas[: i + 1]))  # noqa: E731  (independent of the class)
    z0 = rng.standard_normal(n)
    zp = np.sqrt(ab(prev)) * z0 + np.sqrt(1 - ab(prev)) * rng.standard_normal(n)
    a = ab(t) / ab(prev)
    zt = np.sqrt(a) * zp + np.sqrt(1 - a) * rng.standard_normal(n)
    coef, *_ = np.linalg.lstsq(np.stack([z0, zt], 1), zp, rcond=None)
    np.testing.assert_allclose([c1, c2], coef, atol=6e-3)
    if prev == t - 1:  # the paper's formula for adjacent indices
        beta, alpha = s.betas[t], 1 - s.betas[t]
        np.testing.assert_allclose(
            [c1, c2],
            [beta * np.sqrt(ab(prev)) / (1 - ab(t)), (1 - ab(prev)) * np.sqrt(alpha) / (1 - ab(t))],
            rtol=1e-12,
        )


def test_scheduler_step_deterministic_and_last_step_is_prediction(tmp_path):
    s = DiffIRScheduler()
    s.set_timesteps(4)
    z, x0 = torch.randn(3, 8), torch.randn(3, 8)
    outs = [s.step(x0, t, z).prev_sample for t in s.timesteps]
    assert torch.equal(s.step(x0, 2, z).prev_sample, outs[1])  # no noise anywhere
    torch.testing.assert_close(outs[-1], x0)  # ᾱ_{-1} = 1: the last step returns Ẑ_0
    c1, c2 = s.posterior_coefficients(3)
    torch.testing.assert_close(outs[0], c1 * x0 + c2 * z)
    noisy = s.add_noise(x0, z, torch.tensor([3, 3, 0]))
    ab = s.alphas_cumprod
    torch.testing.assert_close(noisy[0], float(np.sqrt(ab[3])) * x0[0] + float(np.sqrt(1 - ab[3])) * z[0])
    torch.testing.assert_close(noisy[2], float(np.sqrt(ab[0])) * x0[2] + float(np.sqrt(1 - ab[0])) * z[2])
    with pytest.raises(ValueError, match="timesteps"):
        s.add_noise(x0, z, 4)
    with pytest.raises(ValueError, match="shape"):
        s.step(x0[:, :4], 3, z)
    s.save_pretrained(tmp_path)
    assert _public(DiffIRScheduler.from_pretrained(tmp_path).config) == _public(s.config)


# ---------------------------------------------------------------------------------- training
def test_paired_arrays_match_dataset():
    from lsb.data.datasets import PairedShapesDataset

    clean, deg = tr.paired_arrays("sr4", 3, "val", start=5, workers=1)
    ds = PairedShapesDataset("sr4", "val", size=3, start=5)
    for i in range(3):
        torch.testing.assert_close(tr.to_unit(clean[i]), ds[i]["clean"])
        torch.testing.assert_close(tr.to_unit(deg[i]), ds[i]["degraded"])
    with pytest.raises(ValueError, match="unknown DiffIR task"):
        tr.paired_arrays("colourize", 2)


def _stage2_task(task="inpaint", phase_a=0):
    r = TINY_RECIPE
    pairs = tr.paired_arrays(task, 16, workers=1)
    torch.manual_seed(0)
    return tr.Stage2Task(
        task, pairs, 2, r.dirformer(task), r.cpen_s1(task), r.cpen_s2(task), r.denoiser(), phase_a_steps=phase_a
    )


def test_stage2_phase_a_trains_only_the_prior_and_phase_b_backprops_through_the_chain():
    t = _stage2_task(phase_a=1)
    t.wrapped_modules = t.trainable_modules()
    b = t.batch(np.random.default_rng(0), 0, torch.device("cpu"))
    loss, logs = t.loss(b, 0)  # phase A
    loss.backward()
    assert "l1" not in logs and all(p.grad is None for p in t.dirformer.parameters())
    assert t.denoiser.mlp[0].weight.grad.abs().sum() > 0 and t.cpen_s2.net.mlp[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in t.cpen_s1.parameters())  # frozen
    for m in t.trainable_modules().values():
        m.zero_grad(set_to_none=True)
    loss, logs = t.loss(b, 1)  # phase B: L_rec + L_diff
    assert "l1" in logs
    zhat_grad = torch.autograd.grad(
        logs["l1"] * 0 + (loss - logs["l_diff"]), t.denoiser.mlp[0].weight, retain_graph=True
    )[0]
    assert zhat_grad.abs().sum() > 0  # the reconstruction loss reaches the denoiser through all 4 steps


def test_prior_chain_matches_manual_unrolled_steps():
    s = DiffIRScheduler()
    den = PriorDenoiser(prior_dim=8)
    z, d = torch.randn(2, 8), torch.randn(2, 8)
    out = tr.prior_chain(den, s, z, d)
    ab = np.r_[np.cumprod(1 - s.betas)]
    ref = z
    for t in (3, 2, 1, 0):
        x0 = den(ref, t, d)
        abp = ab[t - 1] if t else 1.0
        ref = (s.betas[t] * np.sqrt(abp) / (1 - ab[t])) * x0 + ((1 - abp) * np.sqrt(1 - s.betas[t]) / (1 - ab[t])) * ref
    torch.testing.assert_close(out, ref.float())


def test_training_stages_export_pipelines_and_resume(tmp_path):
    r = TINY_RECIPE
    pairs = tr.paired_arrays("sr4", 16, workers=1)
    res = tr.run_stage("s1", "sr4", tmp_path, r, pairs)
    assert res["steps"] == 4 and (tmp_path / "s1" / "final" / "dirformer").is_dir()
    res = tr.run_stage("s2", "sr4", tmp_path, r, pairs)
    assert res["steps"] == 4 and np.isfinite(res["val"]["psnr"])
    pipe = lsb.DiffIRPipeline.from_pretrained(tmp_path / "s2" / "final")
    assert pipe.config.task == "sr4" and pipe.uses_prior
    # interrupt after the checkpoint at step 3 and resume: the same final weights as the uninterrupted run
    ref = pipe.dirformer.state_dict()
    shutil.rmtree(tmp_path / "s2" / "checkpoint-4")
    shutil.rmtree(tmp_path / "s2" / "final")
    tr.run_stage("s2", "sr4", tmp_path, r, pairs)
    again = lsb.DiffIRPipeline.from_pretrained(tmp_path / "s2" / "final").dirformer.state_dict()
    for k in ref:
        torch.testing.assert_close(again[k], ref[k], rtol=1e-5, atol=1e-6)
    res = tr.run_stage("plain", "sr4", tmp_path, dataclasses.replace(r, plain_steps=2), pairs)
    plain = lsb.DiffIRPipeline.from_pretrained(res["pipeline"])
    assert not plain.uses_prior and plain.cpen is None


def test_stage2_needs_stage1(tmp_path):
    with pytest.raises(FileNotFoundError, match="stage 1"):
        tr.run_stage("s2", "inpaint", tmp_path, TINY_RECIPE, tr.paired_arrays("inpaint", 4, workers=1))
    with pytest.raises(ValueError, match="unknown stage"):
        tr.run_stage("s3", "inpaint", tmp_path, TINY_RECIPE, ())


def test_cli_entrypoint_smoke(tmp_path):
    res = tr.main(
        [
            "--task",
            "inpaint",
            "--stage",
            "diffir",
            "--out",
            str(tmp_path),
            "--steps",
            "2",
            "--tiny",
            "--cache-size",
            "8",
            "--workers",
            "1",
        ]
    )
    assert res["s2"]["steps"] == 2 and (tmp_path / "s2" / "final" / "model_index.json").is_file()


# ---------------------------------------------------------------------------------- pipeline
def test_pipeline_outputs_and_determinism():
    pipe = tiny_pipe("inpaint")
    img = PIL.Image.new("RGB", (64, 64), (200, 30, 30))
    out = pipe(img, generator=torch.Generator().manual_seed(0))
    assert isinstance(out.images[0], PIL.Image.Image) and out.nfe == 4 and out.prior.shape == (1, 16)
    a = pipe([img, img], output_type="pt", generator=torch.Generator().manual_seed(1)).images
    b = pipe([img, img], output_type="pt", generator=torch.Generator().manual_seed(1)).images
    assert a.shape == (2, 3, 64, 64) and torch.equal(a, b) and 0 <= a.min() and a.max() <= 1
    c = pipe(img, output_type="pt", generator=torch.Generator().manual_seed(2)).images
    assert not torch.equal(a[:1], c)  # a different initial prior Z_T
    arr = pipe(np.asarray(img), output_type="np", num_inference_steps=2).images
    assert arr.shape == (1, 64, 64, 3)
    assert pipe(img, output_type="pt", num_inference_steps=1).nfe == 1


def test_pipeline_inpaint_ignores_the_hole_content_and_accepts_masks():
    pipe = tiny_pipe("inpaint")
    a = np.full((64, 64, 3), 60, np.uint8)
    b = a.copy()
    b[30:34, 30:34] = 255  # inside the world's hole
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    ra = pipe(a, output_type="pt", generator=g()).images
    torch.testing.assert_close(ra, pipe(b, output_type="pt", generator=g()).images)
    mask = np.zeros((64, 64), bool)
    mask[20:44, 20:44] = True  # the default box, given explicitly
    torch.testing.assert_close(ra, pipe(b, mask=mask, output_type="pt", generator=g()).images)
    rm = pipe(b, mask=PIL.Image.fromarray(mask.astype(np.uint8) * 255), output_type="pt", generator=g()).images
    torch.testing.assert_close(ra, rm)
    known = torch.from_numpy(~mask)
    torch.testing.assert_close(ra[0][:, known], torch.full_like(ra[0][:, known], 60 / 255))  # kept as given


def test_pipeline_save_load_and_custom_pipeline(tmp_path):
    from diffusers import DiffusionPipeline

    pipe = tiny_pipe("sr4")
    pipe.save_pretrained(tmp_path / "p")
    x = torch.rand(3, 64, 64)
    ref = pipe(x, output_type="pt", generator=torch.Generator().manual_seed(0)).images
    for loaded in (
        lsb.DiffIRPipeline.from_pretrained(tmp_path / "p"),
        DiffusionPipeline.from_pretrained(
            tmp_path / "p", custom_pipeline=lsb.pipeline_dir("diffir"), trust_remote_code=True
        ),
    ):
        loaded.set_progress_bar_config(disable=True)
        assert loaded.config.task == "sr4"
        torch.testing.assert_close(loaded(x, output_type="pt", generator=torch.Generator().manual_seed(0)).images, ref)
    plain = tiny_pipe("sr4", prior_dim=0)
    plain.save_pretrained(tmp_path / "plain")
    loaded = lsb.DiffIRPipeline.from_pretrained(tmp_path / "plain")
    out = loaded(x, output_type="pt", num_inference_steps=4)
    assert out.nfe == 0 and out.prior is None
    torch.testing.assert_close(out.images, plain(x, output_type="pt").images)


def test_pipeline_bad_inputs():
    pipe = tiny_pipe("inpaint")
    img = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="required"):
        pipe(None)
    with pytest.raises(ImageInputError, match="multiple"):
        pipe(np.zeros((62, 64, 3), np.uint8))
    with pytest.raises(ImageInputError, match="RGB"):
        pipe(np.zeros((64, 64, 5), np.float32))
    with pytest.raises(ImageInputError, match="NaN"):
        pipe(np.full((64, 64, 3), np.nan, np.float32))
    with pytest.raises(ImageInputError, match="does not match"):
        pipe(img, mask=np.zeros((32, 32), bool))
    with pytest.raises(ImageInputError, match="values"):
        pipe(img, mask=np.full((64, 64), 3.0))
    with pytest.raises(ImageInputError, match="batch"):
        pipe([img, img, img], mask=np.zeros((2, 64, 64), bool))
    with pytest.raises(ImageInputError, match="unsupported"):
        pipe(img, mask="hole")
    for n in (0, 5, 2.5, True):
        with pytest.raises(ValueError, match="num_inference_steps"):
            pipe(img, num_inference_steps=n)
    with pytest.raises(ValueError, match="output_type"):
        pipe(img, output_type="latent")
    with pytest.raises(ValueError, match="only used for inpainting"):
        tiny_pipe("sr4")(img, mask=np.zeros((64, 64), bool))


def test_pipeline_rejects_mismatched_components():
    m = tiny_models("inpaint")
    with pytest.raises(ValueError, match="unknown restoration task"):
        lsb.DiffIRPipeline(**m, task="colourize")
    with pytest.raises(ValueError, match="in_channels=3"):
        lsb.DiffIRPipeline(**m, task="sr4")
    with pytest.raises(ValueError, match="needs cpen"):
        lsb.DiffIRPipeline(dirformer=m["dirformer"], denoiser=m["denoiser"], scheduler=m["scheduler"])
    with pytest.raises(ValueError, match="T=4"):
        lsb.DiffIRPipeline(**{**m, "scheduler": DiffIRScheduler(num_train_timesteps=6)})
    with pytest.raises(ValueError, match="DiffIRScheduler"):
        lsb.DiffIRPipeline(**{**m, "scheduler": lsb.I2SBScheduler()})
    with pytest.raises(ValueError, match="prior sizes"):
        lsb.DiffIRPipeline(**{**m, "denoiser": PriorDenoiser(prior_dim=8)})
    with pytest.raises(ValueError, match="takes no cpen"):
        lsb.DiffIRPipeline(dirformer=tiny_models("inpaint", prior_dim=0)["dirformer"], cpen=m["cpen"])
