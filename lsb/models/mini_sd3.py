"""Architecture of the embedded mini Stable Diffusion 3 (a rectified-flow model on the shapes world).

The component classes of SD3 (``SD3Transformer2DModel``, ``AutoencoderKL`` with a ``shift_factor``,
two ``CLIPTextModelWithProjection`` + ``CLIPTokenizer``, ``T5EncoderModel`` + ``T5TokenizerFast``, a
``FlowMatchEulerDiscreteScheduler``), so that the stock ``StableDiffusion3Pipeline`` loads the folder
without arguments. Only the transformer is trained; the rest comes from the embedded mini SD:

- VAE: the mini SD's, with ``shift_factor`` 0.0 (SD3's pipeline computes
  ``(latents - shift_factor) * scaling_factor`` and fails on ``None``); latents stay 4 x 8 x 8.
- ``text_encoder``: the mini SD's CLIP text encoder plus one identity layer (attention output and MLP
  output zeroed), so SD3's penultimate hidden state is the mini SD's full-depth (4-layer) feature and the
  pooled projection (identity) is the mini SD's final-layer EOS embedding.
- ``text_encoder_2``: the mini SD's CLIP text encoder as it is (SD3's penultimate = its 3rd layer).
  SD3 concatenates the two along features: 128 + 128 = 256 = ``joint_attention_dim``.
- ``text_encoder_3``: a one-layer T5 encoder whose final layer norm has weight 0, so it outputs zeros,
  exactly what ``StableDiffusion3Pipeline`` feeds the transformer when ``text_encoder_3=None``: the model
  draws the same images with or without it. It exists because diffusers 0.42 refuses to load an SD3
  folder without ``text_encoder_3`` unless the caller passes ``text_encoder_3=None``.
- tokenizers: the mini SD's word-level CLIP tokenizer (``model_max_length`` 16) and a T5 (Unigram)
  tokenizer built offline whose vocabulary is the world's words.

Everything is stored in float32: diffusers loads the transformer and VAE in float32 while transformers
loads the text encoders in their stored dtype, and a mix of the two fails inside the pipeline.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data.shapes import caption_vocabulary
from .mini_sd import merged_config

#: CLIP tokens the SD3 pipeline takes per prompt (the world's captions are at most 9 with BOS/EOS).
CLIP_MAX_LENGTH = 16
#: ``StableDiffusion3Pipeline``'s default ``max_sequence_length`` (T5 tokens per prompt).
T5_SEQUENCE_LENGTH = 256

TRANSFORMER_CONFIG = dict(
    sample_size=8,
    patch_size=1,
    in_channels=4,
    out_channels=4,
    num_layers=5,
    attention_head_dim=32,
    num_attention_heads=4,
    joint_attention_dim=256,
    caption_projection_dim=128,
    pooled_projection_dim=256,
    pos_embed_max_size=16,
)

T5_CONFIG = dict(
    d_model=256,
    d_kv=8,
    d_ff=32,
    num_layers=1,
    num_heads=1,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=16,
    dropout_rate=0.0,
    feed_forward_proj="relu",
)

#: SD3's scheduler config (shared/configs: FlowMatchEulerDiscreteScheduler, 1000 train timesteps) with
#: ``shift`` 1.0 instead of 3.0: SD3's shift moves 1024 px images (4096 latent tokens) to higher noise;
#: 64 latent tokens need no such move, and training samples s without shift.
SCHEDULER_CONFIG = dict(
    _class_name="FlowMatchEulerDiscreteScheduler",
    num_train_timesteps=1000,
    shift=1.0,
)


def build_transformer(**overrides):
    from diffusers import SD3Transformer2DModel

    return SD3Transformer2DModel(**merged_config(TRANSFORMER_CONFIG, overrides))


def build_scheduler(**overrides):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler.from_config(merged_config(SCHEDULER_CONFIG, overrides))


def build_t5_tokenizer():
    """A ``T5TokenizerFast`` (Unigram) built offline: each word of the world is one token, other text falls
    back to letters (and ``<unk>``)."""
    from transformers import T5TokenizerFast

    words = sorted(set(caption_vocabulary()) | {"an"})
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("\u2581" + w, -1.0) for w in words]
    vocab += [("\u2581", -5.0)] + [(c, -10.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    return T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=512)


def build_t5_encoder(tokenizer, **overrides):
    """A one-layer ``T5EncoderModel`` that outputs zeros (final layer norm weight 0); see the module doc."""
    from transformers import T5Config, T5EncoderModel

    cfg = merged_config(T5_CONFIG, overrides)
    cfg.update(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = T5EncoderModel(T5Config(**cfg))
    with torch.no_grad():
        model.encoder.final_layer_norm.weight.zero_()
    return model


def clip_with_projection(clip_text_model, extra_identity_layer: bool = False):
    """A ``CLIPTextModelWithProjection`` holding ``clip_text_model``'s weights, an identity ``text_projection``
    and, with ``extra_identity_layer``, one more encoder layer that leaves its input unchanged."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    cfg = clip_text_model.config.to_dict()
    hidden = cfg["hidden_size"]
    cfg.update(projection_dim=hidden, architectures=["CLIPTextModelWithProjection"])
    if extra_identity_layer:
        cfg["num_hidden_layers"] += 1
    for k in ("dtype", "torch_dtype", "transformers_version", "_name_or_path"):
        cfg.pop(k, None)
    torch.manual_seed(0)
    model = CLIPTextModelWithProjection(CLIPTextConfig(**cfg)).float()
    # transformers 5: CLIPTextModel's keys are those of CLIPTextModelWithProjection.text_model
    missing, unexpected = model.text_model.load_state_dict(
        {k.removeprefix("text_model."): v.float() for k, v in clip_text_model.state_dict().items()}, strict=False
    )
    expected_missing = set()
    if extra_identity_layer:
        last = cfg["num_hidden_layers"] - 1
        expected_missing = {k for k in model.text_model.state_dict() if k.startswith(f"encoder.layers.{last}.")}
    if set(missing) != expected_missing or unexpected:
        raise ValueError(
            f"CLIP weights do not fit: missing {sorted(set(missing) - expected_missing)}, unexpected {unexpected}"
        )
    with torch.no_grad():
        model.text_projection.weight.copy_(torch.eye(hidden))
        if extra_identity_layer:
            layer = model.text_model.encoder.layers[-1]
            for lin in (layer.self_attn.out_proj, layer.mlp.fc2):
                lin.weight.zero_()
                lin.bias.zero_()
    return model.eval()


def components_from_mini_sd(mini_sd_dir: str | Path) -> dict:
    """The frozen SD3 components (everything but the transformer and scheduler) built from a mini SD folder."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

    src = Path(mini_sd_dir)
    vae = AutoencoderKL.from_pretrained(src / "vae", torch_dtype=torch.float32)
    vae.register_to_config(shift_factor=0.0)
    clip = CLIPTextModel.from_pretrained(src / "text_encoder", dtype=torch.float32)
    tokenizer = CLIPTokenizer.from_pretrained(src / "tokenizer", model_max_length=CLIP_MAX_LENGTH)
    tokenizer_3 = build_t5_tokenizer()
    return dict(
        vae=vae.eval(),
        text_encoder=clip_with_projection(clip, extra_identity_layer=True),
        tokenizer=tokenizer,
        text_encoder_2=clip_with_projection(clip),
        tokenizer_2=copy.deepcopy(tokenizer),
        text_encoder_3=build_t5_encoder(tokenizer_3).eval(),
        tokenizer_3=tokenizer_3,
    )


def build_pipeline(transformer, components: dict, scheduler=None):
    """A stock ``StableDiffusion3Pipeline`` from the trained transformer and the frozen components."""
    from diffusers import StableDiffusion3Pipeline

    return StableDiffusion3Pipeline(transformer=transformer, scheduler=scheduler or build_scheduler(), **components)


class RepeatedTokenJointAttnProcessor:
    """SD3's joint attention in which the LAST context token stands for ``repeats`` identical copies.

    Identical context tokens stay identical through every joint block (same projections, same queries),
    and ``repeats`` identical keys/values weigh in a softmax like one key whose logit is raised by
    ``log(repeats)``. So a transformer given ``[clip tokens; one T5 token]`` with this processor computes
    exactly what the stock processor computes on ``[clip tokens; the T5 token repeated]``; training uses it
    because the mini model's T5 stream is 256 identical tokens (see the module doc), which would
    otherwise be most of the compute. For training only; shipped models use the stock processor.
    """

    def __init__(self, repeats: int):
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        self.repeats = int(repeats)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        if encoder_hidden_states is None:
            raise ValueError("RepeatedTokenJointAttnProcessor needs context tokens (joint attention)")
        b, n_img = hidden_states.shape[:2]
        heads = attn.heads

        def split(x):
            return x.view(b, x.shape[1], heads, -1).transpose(1, 2)

        q, k, v = (split(f(hidden_states)) for f in (attn.to_q, attn.to_k, attn.to_v))
        cq, ck, cv = (split(f(encoder_hidden_states)) for f in (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj))
        if attn.norm_q is not None:
            q, k = attn.norm_q(q), attn.norm_k(k)
        if attn.norm_added_q is not None:
            cq, ck = attn.norm_added_q(cq), attn.norm_added_k(ck)
        q, k, v = torch.cat([q, cq], 2), torch.cat([k, ck], 2), torch.cat([v, cv], 2)
        bias = torch.zeros(k.shape[2], dtype=q.dtype, device=q.device)
        bias[-1] = math.log(self.repeats)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[None, :])
        out = out.transpose(1, 2).reshape(b, -1, heads * q.shape[-1]).to(q.dtype)
        img, ctx = out[:, :n_img], out[:, n_img:]
        img = attn.to_out[1](attn.to_out[0](img))
        if attn.context_pre_only:
            return img, ctx
        return img, attn.to_add_out(ctx)


def set_repeated_token_attention(transformer, repeats: int | None) -> None:
    """Switch ``transformer`` to :class:`RepeatedTokenJointAttnProcessor` (``repeats`` int) or back to the
    stock joint processor (``None``)."""
    from diffusers.models.attention_processor import JointAttnProcessor2_0

    transformer.set_attn_processor(
        JointAttnProcessor2_0() if repeats is None else RepeatedTokenJointAttnProcessor(repeats)
    )
