"""The GPU table of issue 26: every family lsb runs, random weights of the real architectures at native size.

    python -m benchmarks.gpu.families --device cuda [--families sd15 flux-dev zimage qwenimage flux2-klein-4b]
    python -m benchmarks.gpu.families --dry-run --out /tmp/gpu-dry     # tiny models on the CPU (what the test runs)

Per family: LSB at NFE 8 (Euler and multistep), FlowEdit at the family's defaults and SDEdit at NFE 8 where the
family has it; seconds per image (one warm-up run, then one timed run of one image, CUDA synchronised), network
calls and forward passes per image, and peak GPU memory (``torch.cuda.max_memory_allocated``). Then FLUX.1-dev
through lsb's loader with ``offload="model"`` and with ``quantize="int8"`` (saved once to ``--workdir``, loaded the
way ``lsb translate --offload / --quantize`` loads it).

The transformers / UNets, VAEs and SD / FLUX.1 text encoders are built from ``../shared/configs`` (the real
architectures, random weights, bfloat16 on the GPU; SD 1.5 in float16 at 512 px). The LLM text encoders of
Z-Image, Qwen-Image and FLUX.2 klein are not in the configs: they are built at the published Qwen3-4B / Qwen2.5-VL-7B
text widths and depths (:data:`LLM_ENCODERS`; Qwen-Image's vision tower reduced to one block, unused for text). The
tokenizers are the project's small offline ones (token ids stay within the real vocabularies). Random weights
make the pictures noise: only time, counts and memory are meaningful.

Writes ``<out>/gpu-families.md`` and ``.json`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT.parent / "shared" / "configs"
FAMILY_NAMES = ("sd15", "flux-dev", "zimage", "qwenimage", "flux2-klein-4b")

#: published text-model sizes of the LLM encoders (not in shared/configs)
LLM_ENCODERS = {
    "qwen3-4b": dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, vocab_size=151936),
    "qwen2.5-vl-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                          num_key_value_heads=4, vocab_size=152064),
}  # fmt: skip


@contextlib.contextmanager
def building(device, dtype):
    """Modules built directly on ``device`` in ``dtype`` (no float32 copy on the CPU first)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def cfg(family: str, name: str) -> dict:
    from lsb.models.random_sd import load_config

    return load_config(CONFIGS, family, name)


def real_pipeline(name: str, device, dtype):
    """The stock diffusers pipeline of ``name`` with random weights of the real architecture on ``device``."""
    import diffusers
    import transformers

    from lsb.models import mini_sd
    from lsb.models.random_flow import build_t5_tokenizer
    from lsb.models.random_zimage import build_chat_tokenizer

    with building(device, dtype):
        if name == "sd15":
            from lsb.models.random_sd import build_components

            return diffusers.StableDiffusionPipeline(
                **build_components(CONFIGS, "sd15", dtype=dtype), safety_checker=None, feature_extractor=None,
                requires_safety_checker=False,
            )  # fmt: skip
        if name == "flux-dev":
            clip_tok, t5_tok = mini_sd.build_tokenizer(max_length=77), build_t5_tokenizer()
            return diffusers.FluxPipeline(
                transformer=diffusers.FluxTransformer2DModel(**cfg("flux-dev", "transformer")),
                vae=diffusers.AutoencoderKL(**cfg("flux-dev", "vae")),
                text_encoder=transformers.CLIPTextModel(transformers.CLIPTextConfig(**cfg("flux-dev", "text_encoder"))),
                tokenizer=clip_tok,
                text_encoder_2=transformers.T5EncoderModel(transformers.T5Config(**cfg("flux-dev", "text_encoder_2"))),
                tokenizer_2=t5_tok,
                scheduler=diffusers.FlowMatchEulerDiscreteScheduler.from_config(cfg("flux-dev", "scheduler")),
            )
        tok = build_chat_tokenizer()
        ids = {"pad_token_id": tok.pad_token_id, "bos_token_id": None, "eos_token_id": tok.eos_token_id}
        if name == "zimage":
            encoder = transformers.Qwen3Model(transformers.Qwen3Config(**LLM_ENCODERS["qwen3-4b"], **ids))
            return diffusers.ZImagePipeline(
                transformer=diffusers.ZImageTransformer2DModel(**cfg("z-image-turbo", "transformer_config")),
                vae=diffusers.AutoencoderKL(**cfg("flux-dev", "vae")),  # Z-Image uses FLUX.1's VAE
                text_encoder=encoder, tokenizer=tok,
                scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=False),
            )  # fmt: skip
        if name == "qwenimage":
            text = dict(LLM_ENCODERS["qwen2.5-vl-7b"], rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]})
            vision = dict(depth=1, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=3584)
            config = transformers.Qwen2_5_VLConfig(text_config={**text, **ids}, vision_config=vision, **ids)
            return diffusers.QwenImagePipeline(
                transformer=diffusers.QwenImageTransformer2DModel(**cfg("qwen-image", "transformer_config")),
                vae=diffusers.AutoencoderKLQwenImage(),  # the class defaults are Qwen-Image's VAE
                text_encoder=transformers.Qwen2_5_VLForConditionalGeneration(config), tokenizer=tok,
                scheduler=diffusers.FlowMatchEulerDiscreteScheduler(
                    base_image_seq_len=256, base_shift=0.5, max_image_seq_len=8192, max_shift=0.9, shift=1.0,
                    shift_terminal=0.02, use_dynamic_shifting=True, time_shift_type="exponential",
                ),
            )  # fmt: skip
        if name == "flux2-klein-4b":
            encoder = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**LLM_ENCODERS["qwen3-4b"], **ids))
            return diffusers.Flux2KleinPipeline(
                transformer=diffusers.Flux2Transformer2DModel(**cfg("flux2-klein-4b", "transformer_config")),
                vae=diffusers.AutoencoderKLFlux2(), text_encoder=encoder, tokenizer=tok,
                scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True),
                is_distilled=False,
            )  # fmt: skip
    raise ValueError(f"unknown family {name!r}; choose from {', '.join(FAMILY_NAMES)}")


def tiny_pipeline(name: str):
    """The same stock pipeline at toy size on the CPU (the dry run): the embedded mini SD for SD 1.5, tiny random
    models of the real classes for the others."""
    import diffusers

    import lsb
    from lsb.models import random_flow, random_zimage

    if name == "sd15":
        return diffusers.StableDiffusionPipeline.from_pretrained(lsb.MINI_SD)
    builders = {
        "flux-dev": (diffusers.FluxPipeline, random_flow.tiny_flux_components, {}),
        "zimage": (diffusers.ZImagePipeline, random_zimage.tiny_zimage_components, {}),
        "qwenimage": (diffusers.QwenImagePipeline, random_zimage.tiny_qwenimage_components, {}),
        "flux2-klein-4b": (
            diffusers.Flux2KleinPipeline,
            random_zimage.tiny_flux2_klein_components,
            {"is_distilled": False},
        ),
    }
    if name not in builders:
        raise ValueError(f"unknown family {name!r}; choose from {', '.join(FAMILY_NAMES)}")
    cls, components, extra = builders[name]
    return cls(**components(), **extra)


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def measure(method, pipe, image, nfe, device, solver=None) -> dict:
    """One warm-up and one timed translation of ``image``: seconds, calls, forward passes, peak memory (GB)."""
    from lsb.surfaces.translators import translate

    if solver is not None:
        pipe.scheduler.register_to_config(solver=solver)
    pipe.set_progress_bar_config(disable=True)
    run = dict(nfe=nfe, generator=[torch.Generator().manual_seed(0)], output_type="np", return_forward_passes=True)
    translate(method, pipe, [image], "a photo of a cat", "a photo of a dog", **run)
    sync(device)
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    _, calls, passes = translate(method, pipe, [image], "a photo of a cat", "a photo of a dog", **run)
    sync(device)
    seconds = time.perf_counter() - start
    return {
        "seconds": round(seconds, 3),
        "calls": calls,
        "forward_passes": passes,
        "peak_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2) if cuda else None,
    }


def family_rows(name: str, stock, device, size: int, nfe: int) -> list[dict]:
    """The methods of ``stock``'s family on one ``size`` px image: LSB Euler / multistep at ``nfe``, FlowEdit at its
    defaults, SDEdit at ``nfe`` (where the family has them)."""
    import numpy as np
    from PIL import Image

    from lsb.families import family_of
    from lsb.surfaces.auto import AutoPipelineForTranslation

    family = family_of(stock)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8))
    plan = [("lsb", "euler", nfe), ("lsb", "multistep", nfe), ("flowedit", None, None), ("sdedit", None, nfe)]
    rows = []
    for method, solver, budget in plan:
        if not family.supports(method):
            continue
        pipe = AutoPipelineForTranslation.from_pipe(stock, method=method)
        row = {"family": name, "label": family.label, "size": size, "method": method, "solver": solver}
        rows.append({**row, **measure(method, pipe, image, budget, device, solver)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def memory_rows(stock, workdir: Path, device, size: int, nfe: int) -> list[dict]:
    """FLUX.1-dev saved once, then loaded by lsb's loader with offload="model" and with quantize="int8"; LSB at
    ``nfe``. Offload needs an accelerator: on the CPU its row says it was skipped."""
    import numpy as np
    from PIL import Image

    from lsb.surfaces.translators import load_translator

    folder = workdir / "flux-dev-random"
    if not (folder / "model_index.json").is_file():
        stock.save_pretrained(folder)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8))
    rows = []
    for option in ({"offload": "model"}, {"quantize": "int8"}):
        row = {"family": "flux-dev", "label": "FLUX.1", "size": size, "method": "lsb", "solver": "euler", **option}
        if option.get("offload") and torch.device(device).type == "cpu":
            rows.append({**row, "skipped": "offload needs an accelerator"})
            continue
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
        pipe = load_translator("lsb", str(folder), device=device, **option)
        rows.append({**row, **measure("lsb", pipe, image, nfe, device, "euler")})
        print(json.dumps(rows[-1]), flush=True)
        del pipe
    return rows


def write(rows: list[dict], out: Path, command: str, device: str) -> str:
    head = "| family | size | method | solver | option | s / image | calls | forward passes | peak GB |"
    lines = [
        "# The families on one GPU (random weights of the real architectures)",
        "",
        f"Command: `{command}`  ",
        f"Device: {device}; torch {torch.__version__}; {platform.platform()}",
        "",
        head,
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        option = ", ".join(f"{k} {r[k]}" for k in ("offload", "quantize") if r.get(k)) or "-"
        if "skipped" in r:
            lines.append(
                f"| {r['label']} | {r['size']} | {r['method']} | {r['solver']} | {option} | {r['skipped']} | | | |"
            )
            continue
        peak = "-" if r["peak_gb"] is None else f"{r['peak_gb']:.2f}"
        lines.append(
            f"| {r['label']} | {r['size']} | {r['method']} | {r['solver'] or '-'} | {option} | {r['seconds']:.2f} | "
            f"{r['calls']} | {r['forward_passes']} | {peak} |"
        )
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    for name, content in (
        ("gpu-families.md", text),
        ("gpu-families.json", json.dumps({"command": command, "device": device, "rows": rows}, indent=1)),
    ):
        tmp = out / f".{name}.tmp"
        tmp.write_text(content)
        tmp.replace(out / name)  # atomic: a reader never sees half a table
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", nargs="+", default=list(FAMILY_NAMES), choices=FAMILY_NAMES)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dry-run", action="store_true", help="tiny models on the CPU at 64 px")
    ap.add_argument("--nfe", type=int, default=8)
    ap.add_argument("--no-memory-options", action="store_true", help="skip FLUX.1-dev with offload / quantization")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/lsb-gpu-bench"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    device = "cpu" if args.dry_run else args.device
    if not args.dry_run and torch.device(device).type == "cuda" and not torch.cuda.is_available():
        print("benchmarks.gpu.families: error: no CUDA device; use --dry-run on the CPU", file=sys.stderr)
        return 2
    rows = []
    for name in args.families:
        if args.dry_run:
            stock, size = tiny_pipeline(name), 64
        else:
            dtype = torch.float16 if name == "sd15" else torch.bfloat16
            stock, size = real_pipeline(name, device, dtype), (512 if name == "sd15" else 1024)
        rows += family_rows(name, stock, device, size, args.nfe)
        if name == "flux-dev" and not args.no_memory_options:
            stock.to("cpu")  # the loaded copies need the GPU memory
            rows += memory_rows(stock, args.workdir, device, size, args.nfe)
        del stock
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
    command = "python -m benchmarks.gpu.families " + " ".join(argv if argv is not None else sys.argv[1:])
    label = torch.cuda.get_device_name() if torch.device(device).type == "cuda" else "CPU (dry run, tiny models)"
    print(write(rows, args.out, command.strip(), label))
    return 0


if __name__ == "__main__":
    sys.exit(main())
