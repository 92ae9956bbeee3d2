"""Latent bridge restoration: training task (I2SB / DDBM / Palette), pipelines, loading, CLI, pixel metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import lsb
from lsb.io.images import ImageInputError
from lsb.helpers.bridge_schedulers import (
    bridge_spec,
    check_scheduler_for_bridge,
    make_bridge_scheduler,
    training_scheduler,
)
from lsb.helpers.concat_unet import expand_conv_in
from lsb.helpers.mask_parsing import preprocess_mask
from lsb.training.bridge import RestorationTask, cache_pair_latents, palette_schedulers, render_pairs
from lsb.training.loop import TrainConfig, train
from tests.cli_helpers import options
from tests.conftest import tiny_components

BASE_SCHED = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}


def make_task(method, task="sr4", n=8, **kw):
    c = tiny_components()
    clean, degraded = cache_pair_latents(c["vae"], task, n)
    return RestorationTask(
        method,
        task,
        c["vae"],
        c["text_encoder"],
        c["tokenizer"],
        c["unet"],
        BASE_SCHED,
        clean,
        degraded,
        batch_size=4,
        sample_images=0,
        **kw,
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny exported pipelines: an I2SB bridge, a DDBM-VP bridge (sr4) and a Palette model (inpaint)."""
    root = tmp_path_factory.mktemp("restoration")
    out = {}
    for method, task in (("i2sb", "sr4"), ("ddbm-vp", "sr4"), ("palette", "inpaint")):
        t = make_task(method, task)
        t.export(root / method)
        out[method] = root / method
    return out


def degraded_images(task="sr4", n=2):
    _, deg, _ = render_pairs(task, "val", n)
    return [Image.fromarray(a) for a in deg]


# ------------------------------------------------------------------ network and losses


def test_expand_conv_in_starts_as_the_pretrained_unet():
    unet = tiny_components()["unet"].eval()
    wide = expand_conv_in(unet).eval()
    assert wide.config.in_channels == 8
    x, cond, h = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.randn(2, 3, 16)
    with torch.no_grad():
        a = unet(x, 10, encoder_hidden_states=h).sample
        b = wide(torch.cat([x, cond], 1), 10, encoder_hidden_states=h).sample
    torch.testing.assert_close(a, b)
    with torch.no_grad():  # the new channels do matter once their weights move
        wide.conv_in.weight[:, 4:] += 0.1
        assert not torch.allclose(wide(torch.cat([x, cond], 1), 10, encoder_hidden_states=h).sample, a)


def test_i2sb_target_is_i2sb_label():
    """x_t and the regression target against an independent computation from I2SB's tables."""
    task = make_task("i2sb")
    b = task.batch(np.random.default_rng(0), 0, torch.device("cpu"))
    x_in, c_noise, target = task._bridge_target(b)
    sched = task.scheduler
    n = torch.round(b["t"] * 999).long()
    assert int(n.min()) >= 1
    x_t = sched.add_noise(b["clean"], b["noise"], n, b["degraded"])
    std = sched.bridge.std_fwd[n].float().reshape(-1, 1, 1, 1)
    torch.testing.assert_close(x_in, x_t, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(target, (x_t - b["clean"]) / std, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(c_noise, sched.preconditioning.noise_levels[n].float())


def test_ddbm_preconditioning_gives_unit_variance_input_and_target():
    """Monte Carlo: with unit-variance independent x_0, x_T (sigma_data = 1, cov 0) the network input c_in x_t and
    the target (x_0 - c_skip x_t) / c_out have unit variance at every t (what the EDM-style scalings promise)."""
    sched = training_scheduler("ddbm-vp", "sr4")
    g = torch.Generator().manual_seed(0)
    for t in (0.05, 0.5, 0.95):
        x0, xT, z = (torch.randn(20000, generator=g, dtype=torch.float64) for _ in range(3))
        x_t = sched.bridge.marginal(x0, xT, t, z)
        c_skip, c_in, c_out, _ = sched.preconditioning.scalings(t)
        assert abs(float((c_in * x_t).var()) - 1) < 0.05
        assert abs(float(((x0 - c_skip * x_t) / c_out).var()) - 1) < 0.05


@pytest.mark.parametrize("method", ["i2sb", "ddbm-vp", "ddbm-ve", "palette"])
def test_training_steps_and_resume(tmp_path, method):
    cfg = TrainConfig(str(tmp_path), max_steps=2, checkpoint_every=1, learning_rate=1e-3, progress=False)
    res = train(make_task(method), cfg)
    assert res["steps"] == 2 and np.isfinite(res["last"]["loss"])
    assert (tmp_path / "checkpoint-2" / "trainer_state.json").is_file()
    res = train(make_task(method), TrainConfig(str(tmp_path), max_steps=3, checkpoint_every=1, progress=False))
    assert res["steps"] == 3 and (tmp_path / "checkpoint-3").is_dir()
    pipe_cls = lsb.ConditionalDiffusionRestorationPipeline if method == "palette" else lsb.BridgeRestorationPipeline
    pipe = pipe_cls.from_pretrained(tmp_path / "final")
    assert pipe.config.task == "sr4" and pipe.unet.config.in_channels == 8


def test_lora_trains_only_adapters_and_conv_in(tmp_path):
    task = make_task("i2sb", lora_rank=2)
    names = [n for n, p in task.unet.named_parameters() if p.requires_grad]
    assert names and all("lora" in n or n.startswith("conv_in") for n in names)
    train(task, TrainConfig(str(tmp_path), max_steps=1, progress=False))
    pipe = lsb.BridgeRestorationPipeline.from_pretrained(tmp_path / "final")
    assert not any("lora" in k for k in pipe.unet.state_dict())  # fused into the exported weights


# ------------------------------------------------------------------ pipelines


@pytest.mark.parametrize(
    "method,sampler,steps,nfe",
    [("i2sb", "i2sb", 3, 3), ("i2sb", "dbim", 3, 3), ("ddbm-vp", "ddbm", 2, 5), ("ddbm-vp", "dbim", 4, 4)],
)
def test_each_scheduler_runs_and_counts_nfe(models, method, sampler, steps, nfe):
    pipe = lsb.BridgeRestorationPipeline.from_pretrained(models[method])
    pipe.set_progress_bar_config(disable=True)
    pipe.set_sampler(sampler)
    imgs = degraded_images()
    out = pipe(imgs, num_inference_steps=steps, generator=torch.Generator().manual_seed(0), output_type="np")
    assert out.images.shape == (2, 64, 64, 3) and out.nfe == nfe and np.isfinite(out.images).all()
    again = pipe(imgs, num_inference_steps=steps, generator=torch.Generator().manual_seed(0), output_type="np")
    np.testing.assert_array_equal(out.images, again.images)


def test_save_load_round_trip(models, tmp_path):
    pipe = lsb.BridgeRestorationPipeline.from_pretrained(models["ddbm-vp"])
    pipe.set_progress_bar_config(disable=True)
    pipe.set_sampler("dbim", solver_order=2)
    pipe.save_pretrained(tmp_path / "copy")
    index = json.loads((tmp_path / "copy" / "model_index.json").read_text())
    assert index["task"] == "sr4" and index["trained_bridge"]["bridge"] == "vp"
    back = lsb.BridgeRestorationPipeline.from_pretrained(tmp_path / "copy")
    back.set_progress_bar_config(disable=True)
    assert back.scheduler.config.solver_order == 2
    img = degraded_images(n=1)
    a = pipe(img, num_inference_steps=3, generator=torch.Generator().manual_seed(1), output_type="pt").images
    b = back(img, num_inference_steps=3, generator=torch.Generator().manual_seed(1), output_type="pt").images
    torch.testing.assert_close(a, b)


def test_mismatched_scheduler_is_rejected(models):
    pipe = lsb.BridgeRestorationPipeline.from_pretrained(models["ddbm-vp"])
    with pytest.raises(ValueError, match="trained on 'vp'"):
        pipe.set_sampler("i2sb")
    pipe.scheduler = lsb.I2SBScheduler()
    with pytest.raises(ValueError, match="trained on vp"):
        pipe(degraded_images(n=1), num_inference_steps=2)
    pipe.scheduler = lsb.DBIMScheduler(schedule="vp", sigma_data=0.5)  # same bridge, other preconditioning
    with pytest.raises(ValueError, match="sigma_data"):
        pipe(degraded_images(n=1), num_inference_steps=2)
    i2sb = lsb.BridgeRestorationPipeline.from_pretrained(models["i2sb"])
    with pytest.raises(ValueError, match="DDBM's Heun sampler"):
        i2sb.set_sampler("ddbm")
    with pytest.raises(ValueError):
        check_scheduler_for_bridge(lsb.I2SBScheduler(beta_max=1.0), bridge_spec(i2sb.scheduler))
    pal = lsb.ConditionalDiffusionRestorationPipeline.from_pretrained(models["palette"])
    pal.scheduler = lsb.DBIMScheduler()
    with pytest.raises(ValueError, match="use a DDIM/DDPM scheduler"):
        pal(degraded_images("inpaint", 1))


def test_bad_inputs(models):
    pipe = lsb.BridgeRestorationPipeline.from_pretrained(models["i2sb"])
    with pytest.raises(ImageInputError, match="multiple of 8"):
        pipe(Image.new("RGB", (60, 64)), num_inference_steps=2)
    with pytest.raises(ImageInputError, match="RGB"):
        pipe(np.zeros((64, 64, 4), dtype=np.float32), num_inference_steps=2)
    with pytest.raises(ImageInputError, match="mask: size"):
        pipe(degraded_images(n=1), mask=np.ones((32, 32)), num_inference_steps=2)
    with pytest.raises(ImageInputError, match="values must lie"):
        pipe(degraded_images(n=1), mask=2 * np.ones((64, 64)), num_inference_steps=2)
    with pytest.raises(ValueError, match="output_type"):
        pipe(degraded_images(n=1), num_inference_steps=2, output_type="jpg")
    with pytest.raises(ValueError, match="num_inference_steps"):
        pipe(degraded_images(n=1), num_inference_steps=0)
    c = tiny_components()
    with pytest.raises(ValueError, match="8 input channels"):
        lsb.BridgeRestorationPipeline(
            vae=c["vae"],
            text_encoder=c["text_encoder"],
            tokenizer=c["tokenizer"],
            unet=c["unet"],
            scheduler=lsb.I2SBScheduler(),
            task="sr4",
        )
    with pytest.raises(ValueError, match="unknown restoration task"):
        training_scheduler("i2sb", "denoise")


def test_mask_keeps_known_pixels(models):
    pal = lsb.ConditionalDiffusionRestorationPipeline.from_pretrained(models["palette"])
    pal.set_progress_bar_config(disable=True)
    from lsb.data.degradations import inpaint_mask

    img = degraded_images("inpaint", 1)
    mask = inpaint_mask(64)
    out = pal(img, mask=mask.astype(np.float32), num_inference_steps=2, output_type="np").images[0]
    known = ~mask
    np.testing.assert_allclose(out[known], np.asarray(img[0], dtype=np.float32)[known] / 255, atol=1 / 255 + 1e-6)
    m = preprocess_mask([Image.fromarray(mask)], 3, 64, 64)
    assert m.shape == (3, 1, 64, 64) and float(m.sum()) == 3 * mask.sum()


def test_palette_schedulers_share_betas():
    ddpm, ddim = palette_schedulers(BASE_SCHED)
    torch.testing.assert_close(ddpm.alphas_cumprod, ddim.alphas_cumprod)
    ddim.set_timesteps(1)
    assert int(ddim.timesteps[0]) == 999  # trailing: even one step starts from pure noise


def test_make_bridge_scheduler_matches_trained_spec():
    for kind, task in (("i2sb", "inpaint"), ("ddbm-vp", "sr4"), ("ddbm-ve", "jpeg")):
        spec = bridge_spec(training_scheduler(kind, task))
        for sampler in ("i2sb", "ddbm", "dbim"):
            if (sampler == "i2sb") != (kind == "i2sb") and sampler != "dbim":
                continue
            check_scheduler_for_bridge(make_bridge_scheduler(sampler, spec), spec)


# ------------------------------------------------------------------ loading and CLI


def test_load_restoration_pipeline(models, tmp_path):
    from lsb.helpers.loading import ModelFolderError
    from lsb.surfaces.restorers import load_restoration_pipeline

    pipe = load_restoration_pipeline(models["palette"], device="cpu")
    assert type(pipe).__name__ == "ConditionalDiffusionRestorationPipeline"
    with pytest.raises(ModelFolderError, match="does not exist"):
        load_restoration_pipeline(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFolderError, match="model_index.json is missing"):
        load_restoration_pipeline(tmp_path / "empty")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ValueError, match="does not know"):
        load_restoration_pipeline(tmp_path / "odd")


def test_cli_restore(models, tmp_path, capsys):
    from lsb.surfaces.cli import main

    src = tmp_path / "in"
    src.mkdir()
    for i, im in enumerate(degraded_images(n=2)):
        im.save(src / f"d{i}.png")
    out = tmp_path / "out"

    def restore(output, **opts):
        return main(["restore", str(src), *options(**opts), "-o", str(output)])

    assert restore(out, task="sr4", model=models["ddbm-vp"], scheduler="ddbm", nfe=5, device="cpu") == 0
    assert "NFE 5" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["d0.png", "d1.png", "settings.json"]
    rc = restore(
        out, task="sr4", model=models["i2sb"], scheduler="dbim", solver_order=2, nfe=3, device="cpu", overwrite=True
    )
    assert rc == 0
    for argv, msg in (
        (["--task", "inpaint", "--model", str(models["i2sb"])], "restores 'sr4', not 'inpaint'"),
        (["--task", "sr4", "--model", str(models["i2sb"]), "--scheduler", "ddbm"], "DDBM's Heun sampler"),
        (["--task", "deblur", "--method", "palette"], "python -m lsb.training.bridge --task deblur --bridge palette"),
        (["--task", "sr4", "--model", str(models["i2sb"]), "--eta", "0.5"], "only with --scheduler dbim"),
        (["--task", "sr4", "--model", str(models["i2sb"]), "--method", "diffir"], "give --model or --method"),
    ):
        assert main(["restore", str(src), *argv, "--device", "cpu", "-o", str(tmp_path / "new")]) == 2
        assert msg in capsys.readouterr().err
    # neither --model nor --method: the model shipped for the task (the I2SB bridge for inpainting, DiffIR for sr4)
    shipped = tmp_path / "shipped"
    assert restore(shipped, task="sr4", device="cpu") == 0
    assert "with DiffIRPipeline" in capsys.readouterr().out
    assert restore(shipped, task="inpaint", nfe=2, device="cpu", overwrite=True) == 0
    assert "with BridgeRestorationPipeline" in capsys.readouterr().out
    assert restore(shipped, task="inpaint", method="diffir", device="cpu", overwrite=True) == 0
    assert "with DiffIRPipeline" in capsys.readouterr().out
    Image.new("RGB", (60, 60)).save(src / "bad.png")
    assert restore(tmp_path / "new", task="sr4", model=models["i2sb"], size_policy="keep") == 2
    assert "not a multiple of 8" in capsys.readouterr().err


# ------------------------------------------------------------------ pixel metrics


def test_psnr_ssim_against_independent_values():
    from lsb.metrics.pixel import psnr, ssim

    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 32, 32, generator=g)
    b = (a + 0.05 * torch.randn(2, 3, 32, 32, generator=g)).clamp(0, 1)
    mse = ((a.double() - b.double()) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(psnr(a, b), 10 * torch.log10(1 / mse))
    torch.testing.assert_close(ssim(a, a), torch.ones(2, dtype=torch.float64))
    assert float(ssim(a, b).max()) < 1
    # constant images: SSIM reduces to the luminance term (2 m1 m2 + C1) / (m1^2 + m2^2 + C1)
    c1 = 0.01**2
    s = ssim(torch.full((1, 1, 16, 16), 0.2), torch.full((1, 1, 16, 16), 0.6))
    torch.testing.assert_close(s, torch.tensor([(2 * 0.2 * 0.6 + c1) / (0.04 + 0.36 + c1)], dtype=torch.float64))
    tm = pytest.importorskip("torchmetrics.functional.image")
    ref = tm.structural_similarity_index_measure(a[:1].double(), b[:1].double(), data_range=1.0)
    assert abs(float(ssim(a[:1], b[:1])) - float(ref)) < 5e-3


def test_restoration_helpers_keep_their_old_import_path():
    """lsb.helpers.restoration re-exports the concepts it was split into (region masks import preprocess_mask)."""
    from lsb.helpers import restoration

    assert restoration.preprocess_mask is preprocess_mask and restoration.bridge_spec is bridge_spec
    assert restoration.expand_conv_in is expand_conv_in
    assert not hasattr(restoration, "LatentRestorationMixin")  # helpers are functions (DESIGN.md)
