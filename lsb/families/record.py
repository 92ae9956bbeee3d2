"""The record of a model family: every fact lsb needs about SD 1.x/2.x, SDXL, SD3 or FLUX.1, written once.

A family is what decides how a pretrained text-to-image model is driven: its base (VP diffusion or rectified
flow), its network (a ``UNet2DConditionModel`` or a transformer) and the one call that feeds it (timestep
convention, latent packing, position ids, pooled embeddings / time ids, distilled guidance), its text encoders
and the keys their learned embeddings are saved under, its native resolution, the dtype diffusers runs it in, and
which translation methods exist for it with which pipeline. Each family module (``lsb.families.sd`` ...) builds
one :class:`ModelFamily`; :mod:`lsb.families.registry` lists them. Nothing else in lsb tests a family by hand.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class EncoderSlot:
    """One text encoder of a pipeline: the file key of its learned embedding and the pipeline attributes holding it.

    The keys are the ones model users share embeddings under (ComfyUI's keys, the SDXL files on model hubs):
    ``clip_l``, ``clip_g``, ``t5xxl``.
    """

    key: str
    tokenizer_attr: str
    text_encoder_attr: str


#: The dtypes a family may name (strings: the record does not import torch).
DTYPE_NAMES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class ModelFamily:
    """Everything lsb knows about one model family.

    Attributes:
        name: the short name ("sd", "sdxl", "sd3", "flux"), used in files (``lsb_family`` metadata) and messages.
        label: how people call it ("SD 1.x/2.x", "SDXL", "SD3 / SD3.5", "FLUX.1").
        base: "vp" (the network predicts epsilon or v on a beta schedule) or "flow" (rectified flow, velocity).
        network: the pipeline attribute holding the denoiser ("unet" or "transformer").
        network_classes: the diffusers class names of that denoiser.
        pipeline_classes: ``model_index.json`` ``_class_name`` values that identify the family (diffusers' and lsb's).
        components: the folders a model of the family must hold.
        optional_components: the folders it may lack (loaded as None).
        encoder_slots: its text encoders, in order, with the keys of their learned embeddings.
        latent_patch: side of the latent patches the network sees as one token (FLUX packs 2x2; 1: none).
        default_size: the native image side in pixels when the network config does not give one (FLUX.1: 1024).
        dtypes: the dtype diffusers runs the family in, per device type ("cuda", "mps", "cpu").
        float16_unstable: why float16 breaks the family (T5 / transformer overflow), or "" when it runs fine.
        pipelines: translation method -> ``"module:Class"`` of the pipeline that runs it on this family.
        text_to_image: ``"module:Class"`` of diffusers' text-to-image pipeline of the family (prompt optimization).
        text_to_image_kwargs: keywords that pipeline takes from lsb (no safety checker, no watermark).
        method_defaults: translation method -> its per-family defaults (e.g. FlowEdit's published T / n_max / CFG).
        encode_prompt: ``"module:function"`` of the family's prompt encoder (lsb.prompts).
        network_call: ``fn(network, latents, timestep, cond) -> output``: the ONE place the network is called.
        condition: ``fn(**parts) -> cond``: builds the ``cond`` dict ``network_call`` takes (ids, guidance, ...).
        matches: ``fn(index) -> bool``: whether a ``model_index.json`` dict is a model of this family.
    """

    name: str
    label: str
    base: str
    network: str
    network_classes: tuple[str, ...]
    pipeline_classes: tuple[str, ...]
    components: tuple[str, ...]
    optional_components: tuple[str, ...]
    encoder_slots: tuple[EncoderSlot, ...]
    latent_patch: int
    default_size: int
    dtypes: dict[str, str]
    float16_unstable: str
    pipelines: dict[str, str]
    text_to_image: str
    encode_prompt: str
    network_call: Callable = field(repr=False)
    condition: Callable = field(repr=False)
    matches: Callable = field(repr=False)
    method_defaults: dict[str, dict] = field(default_factory=dict)
    text_to_image_kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.base not in ("vp", "flow"):
            raise ValueError(f"family {self.name}: base must be 'vp' or 'flow', got {self.base!r}")
        bad = {k: v for k, v in self.dtypes.items() if v not in DTYPE_NAMES}
        if bad:
            raise ValueError(f"family {self.name}: unknown dtypes {bad}")

    @property
    def methods(self) -> tuple[str, ...]:
        """The translation methods that exist for this family."""
        return tuple(self.pipelines)

    def supports(self, method: str) -> bool:
        return method in self.pipelines

    def dtype_name(self, device_type: str) -> str:
        """The dtype diffusers runs this family in on ``device_type`` (unknown devices: float32)."""
        return self.dtypes.get(device_type, "float32")

    def pipeline_class(self, method: str):
        """The class that runs ``method`` on this family (imported now); ValueError naming the supported methods."""
        if method not in self.pipelines:
            raise ValueError(
                f"method {method!r} does not run on {self.label} models; {self.label} supports: {', '.join(self.methods)}"
            )
        return resolve(self.pipelines[method])

    def encoder(self) -> Callable:
        """The family's prompt encoder function (lsb.prompts)."""
        return resolve(self.encode_prompt)

    def native_size(self, network_config: dict | None, vae_scale_factor: int = 8) -> int:
        """The image side the network was built for: ``sample_size`` x the VAE factor, else :attr:`default_size`."""
        size = (network_config or {}).get("sample_size")
        return int(size) * vae_scale_factor if isinstance(size, int) and size > 0 else self.default_size

    def slots_of(self, pipe) -> list[EncoderSlot]:
        """The encoders of ``pipe`` a learned token lives in (those present: SD3 without T5 has the two CLIPs)."""
        return [
            s
            for s in self.encoder_slots
            if getattr(pipe, s.text_encoder_attr, None) is not None
            and getattr(pipe, s.tokenizer_attr, None) is not None
        ]

    def slot_keys(self) -> tuple[str, ...]:
        return tuple(s.key for s in self.encoder_slots)


def resolve(spec: str):
    """``"package.module:Name"`` -> the object (imported now)."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def index_entry_class(index: dict, key: str) -> str | None:
    """The class name of component ``key`` in a ``model_index.json`` dict (None when absent or null)."""
    entry = index.get(key)
    if isinstance(entry, (list, tuple)) and len(entry) == 2 and entry[1]:
        return entry[1]
    return None


def has_components(index: dict, family: "ModelFamily") -> bool:
    """Whether a ``model_index.json`` dict holds ``family``'s network (one of its classes) and every required
    component (with a class, not null)."""
    if index_entry_class(index, family.network) not in family.network_classes:
        return False
    return all(index_entry_class(index, name) for name in family.components)


def index_pipeline_class(index: dict) -> str | None:
    name = index.get("_class_name")
    return name[-1] if isinstance(name, (list, tuple)) else name


__all__ = [
    "DTYPE_NAMES",
    "EncoderSlot",
    "ModelFamily",
    "has_components",
    "index_entry_class",
    "index_pipeline_class",
    "resolve",
]
