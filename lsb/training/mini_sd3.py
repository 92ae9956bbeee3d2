"""Training the embedded mini Stable Diffusion 3 (``lsb.MINI_SD3``): a rectified-flow transformer on the shapes world.

Only the ``SD3Transformer2DModel`` is trained; the VAE, the text encoders and the tokenizers are the
embedded mini SD's, frozen (see :mod:`lsb.models.mini_sd3`). The loss is rectified flow as in SD3:
``z_s = (1 - s) x + s e`` with ``x`` a cached scaled latent of a training scene and ``e`` Gaussian noise,
the model sees ``z_s`` at timestep ``1000 s`` and regresses the velocity ``e - x``; ``s`` is drawn
logit-normal(0, 1) (SD3's choice) for a share of the batch and uniform for the rest, so that the low
noise levels LSB's bridge visits are covered too. Captions are augmented as WORLD.md says (with 10 %
empty captions for classifier-free guidance) and encoded once, through the SD3 pipeline's own
``encode_prompt``, so that training sees exactly what ``StableDiffusion3Pipeline`` feeds the model.

The T5 stream of the mini model is 256 identical (zero) tokens; training passes one of them and
:class:`lsb.models.mini_sd3.RepeatedTokenJointAttnProcessor` weighs it as 256 (exact), which cuts the
compute by about four. ``lsb train mini-sd3 --out DIR`` runs (or resumes) it on :func:`lsb.training.loop.train`
and writes the pipeline folder to ``DIR/final``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from ..families import sd3
from ..data import shapes
from ..io.assets import folder_bytes, replace_folder
from ..models import mini_sd3
from .loop import TrainConfig, TrainingTask, is_main_process, train
from .mini_sd import BASE_SAMPLE_PROMPTS, cache_latents

SAMPLE_PROMPTS = [*BASE_SAMPLE_PROMPTS, "a blue square", "a circle on a black background", ""]


def all_captions() -> list[str]:
    """Every caption :func:`lsb.data.shapes.augmented_caption` can produce (the empty one included)."""
    out = {""}
    for shape in shapes.SHAPES:
        for colour in shapes.COLOURS:
            for bg in shapes.BACKGROUNDS:
                out.update(
                    shapes.caption_variants(
                        shapes.Scene(shape=shape, colour=colour, background=bg, size=28.0, cx=32.0, cy=32.0)
                    )
                )
    return sorted(out)


@torch.no_grad()
def encode_captions(pipe, captions: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """caption -> (context tokens with the T5 stream reduced to one token, pooled projection), from the
    pipeline's ``encode_prompt``; checks that the T5 stream is one token repeated."""
    embeds, _, pooled, _ = pipe.encode_prompt(
        captions, None, None, do_classifier_free_guidance=False, device=torch.device("cpu")
    )
    n_clip = pipe.tokenizer_max_length
    t5 = embeds[:, n_clip:]
    if t5.shape[1] != mini_sd3.T5_SEQUENCE_LENGTH or not torch.equal(t5, t5[:, :1].expand_as(t5)):
        raise ValueError("the T5 stream is not one repeated token: the repeated-token training does not apply")
    short = embeds[:, : n_clip + 1].float()
    return {c: (short[i], pooled[i].float()) for i, c in enumerate(captions)}


class MiniSD3Task(TrainingTask):
    name = "mini-sd3"

    def __init__(
        self,
        components: dict,
        latents: torch.Tensor,
        scenes: list[shapes.Scene],
        batch_size: int = 64,
        transformer=None,
        logit_normal_fraction: float = 0.7,
        caption_weights: dict | None = None,
    ):
        if not 0.0 <= logit_normal_fraction <= 1.0:
            raise ValueError(f"logit_normal_fraction must be in [0, 1], got {logit_normal_fraction}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(latents) != len(scenes):
            raise ValueError(f"{len(latents)} latents but {len(scenes)} scenes")
        self.components = components
        for name in ("vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
            components[name].requires_grad_(False).eval()
        self.transformer = transformer if transformer is not None else mini_sd3.build_transformer()
        self.latents, self.scenes = latents, scenes
        self.batch_size, self.logit_normal_fraction = int(batch_size), float(logit_normal_fraction)
        self.caption_weights = caption_weights
        self.captions = encode_captions(self.pipeline(), all_captions())
        mini_sd3.set_repeated_token_attention(self.transformer, mini_sd3.T5_SEQUENCE_LENGTH)

    def trainable_modules(self):
        return {"transformer": self.transformer}

    def batch(self, rng, step, device):
        idx = rng.integers(len(self.latents), size=self.batch_size)
        caps = [shapes.augmented_caption(self.scenes[i], rng, self.caption_weights) for i in idx]
        ctx = torch.stack([self.captions[c][0] for c in caps])
        pooled = torch.stack([self.captions[c][1] for c in caps])
        logit_normal = rng.random(self.batch_size) < self.logit_normal_fraction
        s = np.where(
            logit_normal, 1.0 / (1.0 + np.exp(-rng.standard_normal(self.batch_size))), rng.random(self.batch_size)
        )
        noise = rng.standard_normal((self.batch_size, *self.latents.shape[1:])).astype(np.float32)
        return {
            "x": self.latents[idx].to(device),
            "ctx": ctx.to(device),
            "pooled": pooled.to(device),
            "s": torch.from_numpy(s.astype(np.float32)).to(device),
            "noise": torch.from_numpy(noise).to(device),
        }

    def loss(self, b, step):
        model = self.wrapped_modules["transformer"]
        s = b["s"].view(-1, 1, 1, 1)
        z = (1 - s) * b["x"] + s * b["noise"]
        pred = sd3.network_call(model, z, b["s"] * 1000.0, sd3.condition(b["ctx"], b["pooled"]))
        mse = ((pred.float() - (b["noise"] - b["x"])) ** 2).mean()
        return mse, {"mse": float(mse.detach())}

    def pipeline(self):
        return mini_sd3.build_pipeline(self.transformer, self.components)

    def _with_stock_attention(self, fn):
        mini_sd3.set_repeated_token_attention(self.transformer, None)
        try:
            return fn()
        finally:
            mini_sd3.set_repeated_token_attention(self.transformer, mini_sd3.T5_SEQUENCE_LENGTH)

    @torch.no_grad()
    def sample(self, step, out_dir):
        from ..io.images import save_grid

        def draw():
            self.transformer.eval()
            pipe = self.pipeline()
            pipe.set_progress_bar_config(disable=True)
            imgs = pipe(
                SAMPLE_PROMPTS,
                num_inference_steps=20,
                guidance_scale=DEFAULT_GUIDANCE,
                output_type="pt",
                generator=torch.Generator().manual_seed(0),
            ).images
            save_grid(imgs * 2 - 1, Path(out_dir) / f"mini-sd3-{step:06d}.png", nrow=len(SAMPLE_PROMPTS))

        self._with_stock_attention(draw)

    def export(self, out_dir):
        def save():
            self.pipeline().to(torch.float32).save_pretrained(out_dir, max_shard_size="5MB")  # files under 8 MiB

        self._with_stock_attention(save)


#: guidance the shipped model is documented and measured at (benchmarks/mini_sd3.py)
DEFAULT_GUIDANCE = 3.0


@dataclasses.dataclass
class MiniSD3Recipe:
    """Defaults of the shipped model's training (docs/embedded-models.md / benchmarks/results/mini_sd3.md: the measured run)."""

    steps: int = 7000
    batch: int = 32
    lr: float = 5e-4
    warmup: int = 300
    ema_decay: float = 0.999
    cached_scenes: int = 20000
    logit_normal_fraction: float = 0.7
    seed: int = 0
    #: the mini SD folder whose VAE, text encoder and tokenizer are reused (default: the embedded lsb.MINI_SD)
    base: str | None = None
    #: transformer config overrides (e.g. a tiny one for tests)
    transformer: dict = dataclasses.field(default_factory=dict)
    max_seconds: float = 0.0
    checkpoint_every: int = 250
    sample_every: int = 1000
    mixed_precision: str = "no"


def load_latents(out: Path, base: str, n: int) -> tuple[torch.Tensor, list[shapes.Scene]]:
    """The cached scaled latents of the first ``n`` training scenes (encoded once per run folder)."""
    from safetensors.torch import load_file, save_file

    path = out / f"latents-train-{n}.safetensors"
    scenes = shapes.scenes("train", n)
    if path.is_file():
        return load_file(str(path))["latents"], scenes
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(Path(base) / "vae", torch_dtype=torch.float32)
    latents, _ = cache_latents(vae, n)
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        save_file({"latents": latents.contiguous()}, str(path.with_suffix(".tmp")))
        path.with_suffix(".tmp").rename(path)
    return latents, scenes


def run(out: str | Path, recipe: MiniSD3Recipe | None = None, **overrides) -> dict:
    """Train (or resume) the mini SD3 transformer under ``out``; the pipeline folder goes to ``out/final``."""
    import lsb

    r = dataclasses.replace(recipe or MiniSD3Recipe(), **{k: v for k, v in overrides.items() if v is not None})
    out = Path(out)
    base = r.base or lsb.MINI_SD
    from ..helpers.loading import check_model_folder

    check_model_folder(base, ("vae", "text_encoder", "tokenizer"))
    latents, scenes = load_latents(out, base, r.cached_scenes)
    components = mini_sd3.components_from_mini_sd(base)
    torch.manual_seed(r.seed)
    task = MiniSD3Task(
        components,
        latents,
        scenes,
        batch_size=r.batch,
        transformer=mini_sd3.build_transformer(**r.transformer),
        logit_normal_fraction=r.logit_normal_fraction,
    )
    cfg = TrainConfig(
        str(out),
        max_steps=r.steps,
        learning_rate=r.lr,
        weight_decay=1e-2,
        lr_warmup_steps=r.warmup,
        checkpoint_every=r.checkpoint_every,
        sample_every=r.sample_every,
        ema_decay=r.ema_decay,
        seed=r.seed,
        mixed_precision=r.mixed_precision,
        max_seconds=r.max_seconds,
    )
    res = train(task, cfg)
    if is_main_process():
        res["recipe"] = dataclasses.asdict(r)
        with open(out / "runs.jsonl", "a") as f:  # one line per (resumed) run: steps and seconds add up
            f.write(json.dumps(res, default=str) + "\n")
        res["bytes"] = folder_bytes(out / "final")
    return res


def install(run_dir: str | Path, dest: str | Path) -> Path:
    """Copy ``run_dir/final`` to ``dest`` (replacing it)."""
    src = Path(run_dir) / "final"
    if not (src / "model_index.json").is_file():
        raise FileNotFoundError(f"{src} holds no pipeline: train first")
    return replace_folder(src, dest)


def transformer_from_checkpoint(checkpoint: str | Path, ema: bool = True, **config_overrides):
    """The transformer of a training checkpoint (its EMA weights by default), for checks while a run goes on."""
    from safetensors.torch import load_file

    ckpt = Path(checkpoint)
    model = mini_sd3.build_transformer(**config_overrides)
    if ema and (ckpt / "ema.safetensors").is_file():
        t = load_file(str(ckpt / "ema.safetensors"))
        params = [p for p in model.parameters() if p.requires_grad]
        if len(t) != len(params):
            raise ValueError(f"{ckpt}: EMA holds {len(t)} tensors, the transformer {len(params)}")
        with torch.no_grad():
            for i, p in enumerate(params):
                p.copy_(t[f"ema.{i}"])
    else:
        model.load_state_dict(load_file(str(ckpt / "model.safetensors")))
    return model.eval()
