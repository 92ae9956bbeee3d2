"""Z-Image, Qwen-Image and FLUX.2 klein components with random weights: tiny ones of the real classes, and the real transformer architecture.

The classes are the real ones (``ZImageTransformer2DModel``, ``Qwen3Model``, ``AutoencoderKL`` with FLUX.1's
``shift_factor`` layout, ``FlowMatchEulerDiscreteScheduler``); the tokenizer is a byte-level BPE trained offline on
the shapes-world caption words (:func:`build_chat_tokenizer`) with a chat template of the structure of Qwen3's
(``<|im_start|>role\\n...<|im_end|>``, the generation prompt, the empty think block when thinking is off).
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import mini_sd
from .random_flow import TINY_VAE_CONFIG, flow_scheduler
from .random_sd import load_config

#: the special tokens of a Qwen chat tokenizer (pad = <|endoftext|>)
CHAT_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")

#: a chat template of Qwen3's structure (user / assistant turns, the generation prompt, ``enable_thinking``)
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)


def build_chat_tokenizer(words=None, model_max_length: int = 512):
    """A byte-level BPE ``PreTrainedTokenizerFast`` (as Qwen's) trained offline on ``words`` (default: the
    shapes-world caption words), with the chat special tokens and :data:`CHAT_TEMPLATE`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    words = sorted({w.lower() for w in (words or mini_sd.caption_vocabulary() + list(mini_sd.TEMPLATE_WORDS))})
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=list(CHAT_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([" ".join(words), *words, "user assistant"], trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        model_max_length=model_max_length,
        padding_side="right",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_qwen3_encoder(tokenizer, hidden_size: int = 32, seed: int = 0, layers: int = 2):
    """A small ``Qwen3Model`` (the class of Z-Image's text encoder) over ``tokenizer``'s vocabulary."""
    from transformers import Qwen3Config, Qwen3Model

    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
    )
    return Qwen3Model(config).eval()


def tiny_zimage_components(seed: int = 0) -> dict:
    """``ZImagePipeline`` components at toy size (64 px images, 8x8x4 latents, 2x2 patches: 16 image tokens)."""
    from diffusers import AutoencoderKL, ZImageTransformer2DModel

    tokenizer = build_chat_tokenizer()
    text_encoder = build_qwen3_encoder(tokenizer, 32, seed)
    torch.manual_seed(seed)
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=4,
        dim=32,
        n_layers=1,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        cap_feat_dim=32,
        axes_dims=[4, 6, 6],
        axes_lens=[256, 32, 32],
    )
    torch.manual_seed(seed)
    vae = AutoencoderKL(**TINY_VAE_CONFIG)
    return {
        "transformer": transformer,
        "scheduler": flow_scheduler(shift=3.0, use_dynamic_shifting=False),
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
    }


def build_real_zimage_transformer(configs: str | Path, name: str = "z-image-turbo", device="meta"):
    """The real Z-Image transformer of ``configs/<name>/transformer_config.json`` (``device="meta"``: no memory)."""
    from diffusers import ZImageTransformer2DModel

    cfg = load_config(configs, name, "transformer_config")
    with torch.device(device):
        return ZImageTransformer2DModel(**cfg)


__all__ = [
    "CHAT_TEMPLATE",
    "build_real_flux2_transformer",
    "build_real_qwenimage_transformer",
    "tiny_flux2_dev_components",
    "tiny_flux2_klein_components",
    "tiny_qwenimage_components",
    "build_chat_tokenizer",
    "build_qwen3_encoder",
    "build_real_zimage_transformer",
    "tiny_zimage_components",
]


def tiny_qwenimage_components(seed: int = 0) -> dict:
    """``QwenImagePipeline`` components at toy size: a 4-channel ``AutoencoderKLQwenImage`` (8x, 64 px -> 8x8), a
    two-layer ``Qwen2_5_VLForConditionalGeneration`` over the chat tokenizer, a one-block
    ``QwenImageTransformer2DModel`` on 2x2-packed latents, Qwen-Image's scheduler settings."""
    from diffusers import AutoencoderKLQwenImage, QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = build_chat_tokenizer()
    ids = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": None, "eos_token_id": tokenizer.eos_token_id}
    torch.manual_seed(seed)
    text_config = dict(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=1024, rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
        **ids,
    )  # fmt: skip
    vision_config = dict(
        depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=32, fullatt_block_indexes=[0]
    )
    config = Qwen2_5_VLConfig(text_config=text_config, vision_config=vision_config, vocab_size=len(tokenizer), **ids)
    text_encoder = Qwen2_5_VLForConditionalGeneration(config).eval()
    torch.manual_seed(seed)
    transformer = QwenImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=4, num_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=32, axes_dims_rope=(4, 6, 6),
    )  # fmt: skip
    torch.manual_seed(seed)
    vae = AutoencoderKLQwenImage(
        base_dim=8, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1, temperal_downsample=[False, True, True],
        latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[1.5, 2.0, 0.8, 1.2],
    )  # fmt: skip
    scheduler = flow_scheduler(
        base_image_seq_len=256, base_shift=0.5, max_image_seq_len=8192, max_shift=0.9, shift=1.0, shift_terminal=0.02,
        use_dynamic_shifting=True, time_shift_type="exponential",
    )  # fmt: skip
    return {
        "transformer": transformer,
        "scheduler": scheduler,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
    }


def build_real_qwenimage_transformer(configs: str | Path, device="meta"):
    """The real Qwen-Image transformer of ``configs/qwen-image/transformer_config.json`` (meta: no memory)."""
    from diffusers import QwenImageTransformer2DModel

    cfg = load_config(configs, "qwen-image", "transformer_config")
    with torch.device(device):
        return QwenImageTransformer2DModel(**cfg)


def tiny_flux2_klein_components(seed: int = 0, layers: int = 27) -> dict:
    """``Flux2KleinPipeline`` components at toy size: a 4-channel ``AutoencoderKLFlux2`` (8x; patchified 2x2 to 16
    channels, normalised with its BatchNorm statistics, set to non-trivial values here), a ``Qwen3ForCausalLM`` of
    ``layers`` layers (klein reads hidden states 9, 18, 27) over the chat tokenizer, a one-block
    ``Flux2Transformer2DModel``, klein's flow-matching scheduler settings (dynamic shifting)."""
    from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tokenizer = build_chat_tokenizer()
    torch.manual_seed(seed)
    text_encoder = Qwen3ForCausalLM(
        Qwen3Config(
            vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=layers,
            num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=1024,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
        )
    ).eval()  # fmt: skip
    torch.manual_seed(seed)
    transformer = Flux2Transformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=48, timestep_guidance_channels=16, mlp_ratio=2.0, axes_dims_rope=(2, 2, 2, 2),
        guidance_embeds=False,
    )  # fmt: skip
    torch.manual_seed(seed)
    vae = AutoencoderKLFlux2(
        block_out_channels=(4, 4, 8, 8), latent_channels=4, norm_num_groups=2, layers_per_block=1, sample_size=64
    )
    generator = torch.Generator().manual_seed(seed)
    vae.bn.running_mean.copy_(torch.randn(vae.bn.running_mean.shape, generator=generator) * 0.1)
    vae.bn.running_var.copy_(torch.rand(vae.bn.running_var.shape, generator=generator) + 0.5)
    scheduler = flow_scheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15)
    return {
        "transformer": transformer,
        "scheduler": scheduler,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
    }


def build_real_flux2_transformer(configs: str | Path, name: str, device="meta"):
    """The real FLUX.2 transformer of ``configs/<name>/transformer_config.json`` (meta: no memory)."""
    from diffusers import Flux2Transformer2DModel

    cfg = load_config(configs, name, "transformer_config")
    with torch.device(device):
        return Flux2Transformer2DModel(**cfg)


#: a chat template of the structure FLUX.2-dev's processor applies: content as a list of typed parts, a system turn
DEV_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['content'] is string %}{%- set text = message['content'] %}"
    "{%- else %}{%- set text = message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text')"
    " | join('') %}{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + text + '<|im_end|>\\n' }}"
    "{%- endfor %}"
)


def tiny_flux2_dev_components(seed: int = 0) -> dict:
    """``Flux2Pipeline`` (FLUX.2-dev) components at toy size: a 30-layer tiny ``Mistral3ForConditionalGeneration``
    (dev reads hidden states 10, 20, 30; a one-block Pixtral vision tower, unused for text), a plain fast tokenizer
    with :data:`DEV_CHAT_TEMPLATE` in the place of the ``PixtralProcessor`` (which needs torchvision), a guidance-
    embedding ``Flux2Transformer2DModel``, klein's tiny VAE and scheduler."""
    from diffusers import Flux2Transformer2DModel
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    tokenizer = build_chat_tokenizer()
    tokenizer.chat_template = DEV_CHAT_TEMPLATE
    ids = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": None, "eos_token_id": tokenizer.eos_token_id}
    text = dict(
        model_type="mistral", vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=30,
        num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=1024, **ids,
    )  # fmt: skip
    vision = dict(
        model_type="pixtral", hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        head_dim=8, patch_size=14, image_size=56,
    )  # fmt: skip
    torch.manual_seed(seed)
    text_encoder = Mistral3ForConditionalGeneration(
        Mistral3Config(text_config=text, vision_config=vision, **ids)
    ).eval()
    torch.manual_seed(seed)
    transformer = Flux2Transformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=48, timestep_guidance_channels=16, mlp_ratio=2.0, axes_dims_rope=(2, 2, 2, 2),
        guidance_embeds=True,
    )  # fmt: skip
    klein = tiny_flux2_klein_components(seed, layers=1)
    return {
        "transformer": transformer,
        "scheduler": klein["scheduler"],
        "vae": klein["vae"],
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
    }
