"""The translation methods, one record each: the one list the CLI, the demo, the Python entry points and the
benchmarks read.

A method says what it is called and shown as, and how it runs on a loaded pipeline; which families it runs on
is the families' own fact (``ModelFamily.pipelines``, :mod:`lsb.families`), so a new family that names a
method's pipeline gets the method everywhere. :func:`check_method` turns an unknown method, or one the family
lacks, into one line naming what is supported.

Every ``translate`` function has the same signature,
``fn(pipe, family, images, source_prompt, target_prompt, *, nfe, guidance_scale, tau, t0, generator,
output_type, **extra) -> (images, nfe_spent, forward_passes)``: ``nfe`` is the number of batched network calls
(None: the method's default for the model) and ``forward_passes`` the latents evaluated per image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..families import FAMILIES, ModelFamily


@dataclass(frozen=True)
class TranslationMethod:
    """One translation method.

    Attributes:
        name: what users type (``--method``, ``method=``).
        label: what the demo shows.
        summary: one line for ``--help`` and the docs.
        translate: the function that runs it (see the module docstring).
        solver: whether it takes LSB's ``--solver``.
        load_kwargs: ``fn(family) -> dict`` of ``from_pretrained`` keywords for its pipeline (e.g. no safety checker).
        prepare: ``fn(pipe)`` run once after loading (e.g. SDEdit's DDIM scheduler on a VP model).
    """

    name: str
    label: str
    summary: str
    translate: Callable = field(repr=False)
    solver: bool = False
    load_kwargs: Callable[[ModelFamily], dict] = field(default=lambda family: {}, repr=False)
    prepare: Callable | None = field(default=None, repr=False)

    def families(self) -> tuple[ModelFamily, ...]:
        """The families this method runs on."""
        return tuple(f for f in FAMILIES.values() if f.supports(self.name))


def _prompts_vp(source_prompt, target_prompt) -> dict:
    from ..helpers.sdedit import check_prompt_arg, split_prompt

    check_prompt_arg("source_prompt", source_prompt)
    check_prompt_arg("target_prompt", target_prompt)
    src_text, src_embeds = split_prompt(source_prompt)
    tgt_text, tgt_embeds = split_prompt(target_prompt)
    return dict(
        source_prompt=src_text, target_prompt=tgt_text, source_prompt_embeds=src_embeds, target_prompt_embeds=tgt_embeds
    )


def _vp_settings(pipe, nfe, guidance_scale):
    """A VP model's NFE and w: given, else the folder's ``lsb_defaults.json``, else the paper's."""
    from ..io.settings import check_nfe, translation_defaults

    defaults = translation_defaults(pipe)
    nfe = check_nfe(defaults.num_inference_steps if nfe is None else nfe, name="nfe")
    w = defaults.guidance_scale if guidance_scale is None else float(guidance_scale)
    return defaults, nfe, w


def translate_lsb(pipe, family, images, source_prompt, target_prompt, *, nfe, guidance_scale, tau, t0, **kw):
    """The Latent Schrödinger Bridge: NFE batched calls on [source; target] (2 forward passes each)."""
    generator, output_type = kw.pop("generator", None), kw.pop("output_type", "pil")
    if family.base == "vp":
        _, nfe, w = _vp_settings(pipe, nfe, guidance_scale)
        given = dict(
            num_inference_steps=nfe, guidance_scale=w, tau=tau, t0=t0, **_prompts_vp(source_prompt, target_prompt)
        )
    else:  # unset values: the pipeline's folder defaults (lsb_defaults.json) or its own
        given = {
            k: v
            for k, v in (("num_inference_steps", nfe), ("guidance_scale", guidance_scale), ("tau", tau), ("t0", t0))
            if v is not None
        }
        given.update(source_prompt=source_prompt, target_prompt=target_prompt)
    out = pipe(images, generator=generator, output_type=output_type, **given, **kw)
    return out.images, out.nfe, getattr(out, "forward_passes", 2 * out.nfe)


def translate_sdedit(pipe, family, images, source_prompt, target_prompt, *, nfe, guidance_scale, tau, t0, **kw):
    """SDEdit at the same budget: the source noised to LSB's start level, then ``nfe`` denoising steps with CFG."""
    if family.base == "vp":
        from ..helpers.sdedit import sdedit_translate

        defaults, nfe, w = _vp_settings(pipe, nfe, guidance_scale)
        _prompts_vp(source_prompt, target_prompt)
        outs, spent = sdedit_translate(
            pipe,
            images,
            source_prompt,
            target_prompt,
            nfe=nfe,
            t0=defaults.t0 if t0 is None else t0,
            tau=defaults.tau if tau is None else tau,
            guidance_scale=w,
            **kw,
        )
        return outs, spent, (2 if w > 1 else 1) * spent
    from ..helpers.sdedit import sdedit_flow_translate
    from ..io.settings import PAPER_TRANSLATION

    return sdedit_flow_translate(
        pipe,
        images,
        source_prompt,
        target_prompt,
        nfe=8 if nfe is None else nfe,
        t0=PAPER_TRANSLATION.t0 if t0 is None else t0,
        tau=PAPER_TRANSLATION.tau if tau is None else tau,
        guidance_scale=guidance_scale,
        **kw,
    )


def translate_ddib(pipe, family, images, source_prompt, target_prompt, *, nfe, guidance_scale, tau, t0, **kw):
    """DDIB: DDIM inversion under the source prompt, then DDIM sampling under the target (tau / t0 unused)."""
    _, nfe, w = _vp_settings(pipe, nfe, guidance_scale)
    out = pipe(images, num_inference_steps=nfe, guidance_scale=w, **_prompts_vp(source_prompt, target_prompt), **kw)
    return out.images, out.nfe, getattr(out, "forward_passes", 2 * out.nfe)


def flowedit_budget(family: ModelFamily, nfe: int | None, n_max_fraction: float | None = None) -> dict:
    """FlowEdit's ``num_inference_steps`` / ``n_max`` at a budget of ``nfe`` calls (None: the family's published
    setting). ``n_max_fraction`` = n_max / T sets the start level ``sigmas[T - n_max]`` (None: the published one,
    33/50 for SD3 and 24/28 for FLUX); T = round(nfe / n_max_fraction)."""
    d = family.method_defaults["flowedit"]
    if nfe is None:
        return {"num_inference_steps": d["num_inference_steps"], "n_max": d["n_max"]}
    fraction = d["n_max"] / d["num_inference_steps"] if n_max_fraction is None else float(n_max_fraction)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"n_max_fraction must lie in (0, 1], got {n_max_fraction!r}")
    steps = max(int(nfe), int(round(nfe / fraction)))
    return {"num_inference_steps": steps, "n_max": int(nfe)}


def translate_flowedit(
    pipe,
    family,
    images,
    source_prompt,
    target_prompt,
    *,
    nfe,
    guidance_scale,
    tau,
    t0,
    source_guidance_scale=None,
    n_max_fraction=None,
    **kw,
):
    """FlowEdit (Kulikov et al. 2025): ``nfe`` edit steps on a grid that keeps the family's published start level.
    ``guidance_scale`` is the target branch's guidance (CFG on SD3, distilled on FLUX.1-dev), ``source_guidance_scale``
    the source's; tau / t0 are unused."""
    d = family.method_defaults["flowedit"]
    src_w = d["source_guidance_scale"] if source_guidance_scale is None else source_guidance_scale
    tar_w = d["target_guidance_scale"] if guidance_scale is None else guidance_scale
    if family.name == "flux" and not getattr(pipe.transformer.config, "guidance_embeds", False):
        if guidance_scale is not None or source_guidance_scale is not None:
            raise ValueError(
                "guidance given for a FLUX transformer without guidance embedding (FLUX.1-schnell): "
                "leave --guidance / guidance_scale unset"
            )
        src_w = tar_w = None  # schnell: no guidance embedding
    if getattr(
        pipe, "resolves_guidance", False
    ):  # the pipeline defaults per model (FLUX.2 dev / klein base / distilled)
        src_w, tar_w = source_guidance_scale, guidance_scale
    out = pipe(
        images,
        source_prompt,
        target_prompt,
        **flowedit_budget(family, nfe, n_max_fraction),
        source_guidance_scale=src_w,
        target_guidance_scale=tar_w,
        **kw,
    )
    return out.images, out.nfe, out.forward_passes


def _sdedit_load_kwargs(family: ModelFamily) -> dict:
    if family.name == "sd":
        return {"safety_checker": None, "requires_safety_checker": False}
    if family.name == "sdxl":
        return {"add_watermarker": False}
    return {}


def _sdedit_prepare(pipe) -> None:
    from ..families import family_of
    from ..helpers.sdedit import as_ddim

    if family_of(pipe).base == "vp":
        as_ddim(pipe)  # the paper's SDEdit sampler; flow models keep their flow-matching Euler


#: name -> method, in the order the CLI and the demo list them
METHODS: dict[str, TranslationMethod] = {
    m.name: m
    for m in (
        TranslationMethod(
            "lsb",
            "LSB",
            "the Latent Schrödinger Bridge (NFE batched calls on [source; target])",
            translate_lsb,
            solver=True,
        ),
        TranslationMethod(
            "flowedit",
            "FlowEdit",
            "FlowEdit on rectified-flow models (--nfe = edit steps n_max, --guidance = target guidance; unset: the "
            "published setting)",
            translate_flowedit,
        ),
        TranslationMethod(
            "sdedit",
            "SDEdit",
            "SDEdit from LSB's start level (same NFE budget)",
            translate_sdedit,
            load_kwargs=_sdedit_load_kwargs,
            prepare=_sdedit_prepare,
        ),
        TranslationMethod(
            "ddib",
            "DDIB",
            "DDIB: DDIM inversion then sampling (NFE split between them)",
            translate_ddib,
        ),
    )
}


def get_method(name: str) -> TranslationMethod:
    """The method named ``name``; ValueError naming the known ones."""
    if name not in METHODS:
        raise ValueError(f"unknown translation method {name!r}; lsb has: {', '.join(METHODS)}")
    return METHODS[name]


def check_method(name: str, family: ModelFamily) -> TranslationMethod:
    """The method, if it runs on ``family``; else one line naming the families it needs and the family's methods."""
    method = get_method(name)
    if not family.supports(name):
        labels = [f.label for f in method.families()]
        needs = labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} or {labels[-1]}"
        raise ValueError(
            f"{name} runs on {needs} models; this model is {family.label} (it supports: {', '.join(family.methods)})"
        )
    return method


def methods_for(family: ModelFamily) -> tuple[TranslationMethod, ...]:
    """The methods that run on ``family``, in registry order."""
    return tuple(m for m in METHODS.values() if family.supports(m.name))


def methods_help() -> str:
    """One line per method for ``--help``: name, summary, families."""
    return "; ".join(f"{m.name}: {m.summary} [{', '.join(f.label for f in m.families())}]" for m in METHODS.values())


__all__ = [
    "METHODS",
    "TranslationMethod",
    "check_method",
    "flowedit_budget",
    "get_method",
    "methods_for",
    "methods_help",
    "translate_ddib",
    "translate_flowedit",
    "translate_lsb",
    "translate_sdedit",
]
