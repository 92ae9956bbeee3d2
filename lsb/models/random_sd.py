"""Real Stable Diffusion architectures with random weights, built from their component configs.

Used to exercise (tests) and time (benchmarks) the real code paths without downloading weights: the
UNet, VAE and text encoder have the published architectures (SD 1.5, SD 2.1 configs under
``shared/configs/<family>/``); the text encoder keeps its architecture but uses the project's offline
word tokenizer, so its vocabulary size is adjusted to that tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


def load_config(configs: str | Path, family: str, name: str) -> dict:
    """One component config ``configs/<family>/<name>.json`` (e.g. ``sd15``, ``unet``); FileNotFoundError if absent."""
    path = Path(configs) / family / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no {name} config for {family!r} at {path}")
    return json.loads(path.read_text())


def build_components(configs: str | Path, family: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> dict:
    """``vae``, ``text_encoder``, ``tokenizer``, ``unet`` and ``scheduler`` of ``family`` (random weights)."""
    from diffusers import AutoencoderKL, DDIMScheduler, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from . import mini_sd

    tok = mini_sd.build_tokenizer(max_length=77)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**load_config(configs, family, "unet"))
    vae = AutoencoderKL(**load_config(configs, family, "vae"))
    tcfg = load_config(configs, family, "text_encoder")
    tcfg.update(mini_sd.clip_token_ids(tok))
    te = CLIPTextModel(CLIPTextConfig(**tcfg))
    scfg = load_config(configs, family, "scheduler")
    classes = {"PNDMScheduler": PNDMScheduler, "DDIMScheduler": DDIMScheduler}
    if scfg["_class_name"] not in classes:
        raise ValueError(f"unsupported scheduler class {scfg['_class_name']!r} in the {family} config")
    sched = classes[scfg["_class_name"]].from_config(scfg)
    return {
        "vae": vae.to(dtype),
        "text_encoder": te.to(dtype),
        "tokenizer": tok,
        "unet": unet.to(dtype),
        "scheduler": sched,
    }
