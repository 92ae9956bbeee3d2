"""The mini-SD UNet stage's batch sampling (the timestep focus used to fine-tune for LSB's low-noise range)."""

import numpy as np
import pytest
import torch

from lsb.data import shapes
from lsb.training.mini_sd import UNetTask
from tests.conftest import tiny_vae


def _task(**kw):
    scenes = shapes.scenes("train", 8)
    return UNetTask(None, torch.zeros(len(scenes), 4, 8, 8), scenes, batch_size=512, **kw)


def test_timestep_focus_draws_the_requested_share_from_the_low_noise_end():
    plain = _task().batch(np.random.default_rng(0), 0, "cpu")["t"]
    focused = _task(focus_fraction=0.75, focus_max_timestep=300).batch(np.random.default_rng(0), 0, "cpu")["t"]
    # uniform: P(t < 300) = 0.3; focused: 0.75 + 0.25 * 0.3 = 0.825
    assert abs((plain < 300).float().mean().item() - 0.3) < 0.06
    assert abs((focused < 300).float().mean().item() - 0.825) < 0.05
    assert focused.dtype == plain.dtype and focused.min() >= 0 and focused.max() < 1000
    again = _task(focus_fraction=0.75, focus_max_timestep=300).batch(np.random.default_rng(0), 0, "cpu")["t"]
    assert torch.equal(focused, again)  # seeded


@pytest.mark.parametrize("frac, top", [(0.5, 0), (0.5, 1001), (1.5, 300)])
def test_timestep_focus_rejects_bad_settings(frac, top):
    with pytest.raises(ValueError, match="timestep focus"):
        _task(focus_fraction=frac, focus_max_timestep=top)


def _tiny_vae():
    torch.manual_seed(0)
    return tiny_vae((4, 8), sample_size=16, scaling_factor=2.0)


def test_decoder_latent_noise_decodes_a_perturbed_latent_reproducibly():
    """The robust-decoder option decodes mode + level * std * N(0, 1) (std = 1 / scaling_factor), with the
    noise drawn from the seed and the step, so a resumed run sees the same perturbations."""
    from lsb.training.mini_sd import VAETask, edge_weight

    vae = _tiny_vae()
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    plain = VAETask(batch_size=3, decoder_only=True, vae=vae)
    noisy = VAETask(batch_size=3, decoder_only=True, vae=vae, latent_noise=0.5, seed=4)
    for t in (plain, noisy):
        t.wrapped_modules = {"vae": vae}
    l0, _ = plain.loss(x, 7)
    l1, _ = noisy.loss(x, 7)
    assert l1.item() != pytest.approx(l0.item())
    assert noisy.loss(x, 7)[0].item() == pytest.approx(l1.item())  # same step, same noise
    assert noisy.loss(x, 8)[0].item() != pytest.approx(l1.item())  # next step, new noise
    # the explicit computation with the same draws
    gen = torch.Generator().manual_seed(4 * 1_000_003 + 7)
    z = vae.encode(x).latent_dist.mode()
    level = torch.rand(3, 1, 1, 1, generator=gen) * 0.5 * 0.5
    rec = vae.decode(z + level * torch.randn(z.shape, generator=gen)).sample
    w = edge_weight(x)
    ref = ((rec - x).abs() * w).mean() + (((rec - x) ** 2) * w).mean()
    assert l1.item() == pytest.approx(ref.item(), rel=1e-5)


def test_decoder_latent_noise_needs_the_decoder_only_stage():
    from lsb.training.mini_sd import VAETask

    with pytest.raises(ValueError, match="decoder-only"):
        VAETask(vae=_tiny_vae(), latent_noise=0.1)
    with pytest.raises(ValueError, match=">= 0"):
        VAETask(vae=_tiny_vae(), decoder_only=True, latent_noise=-1)


def test_decoder_continuation_trains_from_a_pipeline_and_exports_with_its_other_parts(tiny_sd_dir, tmp_path):
    """``--stage decoder --decoder-init PIPE`` then ``--stage export``: the exported pipeline has the new
    decoder, the same encoder, and PIPE's UNet / text encoder (no unet stage in the run)."""
    from diffusers import StableDiffusionPipeline

    from lsb.training.mini_sd import export_pipeline, run_stage

    out = tmp_path / "run"
    res = run_stage(
        "decoder",
        out,
        decoder_init=str(tiny_sd_dir),
        decoder_steps=3,
        vae_batch=2,
        decoder_lr=1e-2,
        decoder_latent_noise=0.1,
    )
    assert res["steps"] == 3
    with pytest.raises(FileNotFoundError, match="--decoder-init"):
        export_pipeline(out, tmp_path / "nope")
    run_stage("export", out, decoder_init=str(tiny_sd_dir))
    base = StableDiffusionPipeline.from_pretrained(tiny_sd_dir, dtype=torch.float32)
    new = StableDiffusionPipeline.from_pretrained(out / "pipeline", dtype=torch.float32)
    same = lambda a, b: all(torch.allclose(p, q.to(p.dtype), atol=1e-3) for p, q in zip(a.parameters(), b.parameters()))  # noqa: E731
    assert same(base.unet, new.unet) and same(base.vae.encoder, new.vae.encoder)
    assert not same(base.vae.decoder, new.vae.decoder)
