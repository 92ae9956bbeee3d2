"""A Gradio demo of unpaired image-to-image translation: LSB next to the SDEdit and DDIB baselines.

    python app.py                      # the embedded mini SD, or $LSB_DEMO_MODEL
    lsb demo [--model PATH] [--port N] [--share]

:func:`build_demo` builds the ``gr.Blocks`` (pipelines load lazily on the first translation and are cached,
one per method); :func:`launch_demo` starts it with the demo's upload limit. The main event is exposed as the
API endpoint ``/translate``, so ``gradio_client.Client(url).predict(..., api_name="/translate")`` works.

Input images: with "Resize to the model's resolution" on (the default), every input is resized to the
model's square training resolution (64x64 for the embedded mini SD). With it off, an image whose sides are
multiples of 8 keeps its size (up to :data:`MAX_SIDE` pixels a side); one whose sides are not is still
resized to the model's resolution, and the status line says so.
"""

from __future__ import annotations

import html
import json
import math
import os
import threading
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from .translators import METHODS, load_translator, translate
from ..prompts.domains import DomainFileError, load_domain
from ..io.images import CONVERSIONS, ImageInputError, load_image, make_grid
from ..helpers.loading import ModelFolderError
from ..prompts.tokens import UnknownTokenError

#: Environment variable naming the model the demo serves (a diffusers SD folder or Hub id).
MODEL_ENV = "LSB_DEMO_MODEL"
#: Upload limit (Gradio's ``max_file_size``), also checked on the files the event receives.
MAX_FILE_SIZE = "5mb"
MAX_FILE_BYTES = 5 * 1024 * 1024
#: Largest side kept as is when resizing is off.
MAX_SIDE = 1024
MAX_NFE = 100
METHOD_LABELS = {"lsb": "LSB", "sdedit": "SDEdit", "ddib": "DDIB"}
EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples" / "images"
#: (folder, source prompt, target prompt) for the shipped example images (the shapes world of the mini SD).
EXAMPLE_PROMPTS = {"circles": ("a circle", "a square"), "squares": ("a square", "a triangle"),
                   "triangles": ("a triangle", "a circle")}

#: Small outputs (the mini SD's 64 px) are scaled up to fill their boxes, without blurring.
DEMO_CSS = """
#input-image img, #output-image img, #side-by-side img {
    width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated;
}
#trajectory img { width: auto; height: auto; max-width: 100%; object-fit: contain; }
#trajectory .image-frame { padding-top: 2.4rem; }  /* keep the corner buttons off the column headers */
"""

_USER_ERRORS = (ImageInputError, UnknownTokenError, DomainFileError, ModelFolderError, ValueError, TypeError,
                FloatingPointError)


def _is_embedded(model: str | None) -> bool:
    return model in (None, "", "mini-sd", "embedded")


def model_defaults(model: str | None) -> dict:
    """NFE / tau / t0 / guidance defaults: the paper's, except guidance 3 on the embedded mini SD (as the CLI)."""
    from .cli import MINI_SD_TRANSLATE_DEFAULTS, TRANSLATE_DEFAULTS

    d = MINI_SD_TRANSLATE_DEFAULTS if _is_embedded(model) else TRANSLATE_DEFAULTS
    return dict(nfe=d["nfe"], tau=d["tau"], t0=d["t0"], guidance=d["guidance"])


def model_resolution(model: str | None) -> int | None:
    """The square resolution a local diffusers SD folder was trained at (unet sample size x VAE factor), if known."""
    import lsb

    path = Path(lsb.MINI_SD if _is_embedded(model) else model).expanduser()
    try:
        unet = json.loads((path / "unet" / "config.json").read_text())
        vae = json.loads((path / "vae" / "config.json").read_text())
        size = unet["sample_size"]
        size = size[0] if isinstance(size, (list, tuple)) else size
        return int(size) * 2 ** (len(vae["block_out_channels"]) - 1)
    except (OSError, KeyError, TypeError, ValueError):
        return None


def example_rows() -> list[list]:
    """gr.Examples rows [image, source text, target text] for the images shipped in ``examples/images``,
    interleaved across the folders (circle, square, triangle, circle, ...)."""
    per_folder = []
    if EXAMPLES_DIR.is_dir():
        for folder in sorted(p for p in EXAMPLES_DIR.iterdir() if p.is_dir()):
            src, tgt = EXAMPLE_PROMPTS.get(folder.name, ("", ""))
            per_folder.append([[str(f), src, tgt] for f in sorted(folder.glob("*.png"))])
    rows = []
    for i in range(max(map(len, per_folder), default=0)):
        rows += [files[i] for files in per_folder if i < len(files)]
    return rows


class Translator:
    """Lazily loaded pipelines (one per method, cached) and the demo's translate function."""

    def __init__(self, model: str | None = None, device=None):
        self.model = model or None
        self.device = device
        self._pipes: dict[str, object] = {}
        self._lock = threading.Lock()
        # One translation at a time per pipeline (its scheduler and tokenizer are stateful), whatever the
        # queue's concurrency limit.
        self._busy = {m: threading.Lock() for m in METHODS}

    def pipeline(self, method: str):
        with self._lock:
            if method not in self._pipes:
                self._pipes[method] = load_translator(method, self.model, device=self.device)
            return self._pipes[method]

    def resolution(self, pipe) -> int:
        size = pipe.unet.config.sample_size
        size = size[0] if isinstance(size, (list, tuple)) else size
        return int(size) * pipe.vae_scale_factor

    def __call__(self, image_path, source: str, target: str, method: str = "lsb", nfe: int = 8,
                 tau: float | None = None, t0: float | None = None, guidance: float | None = None, seed: int = 0,
                 resize: bool = True, trajectory: bool = True):
        """Translate one image file. Returns (output, side_by_side, trajectory strip or None, notes).

        Raises the lsb user errors (ImageInputError, UnknownTokenError, DomainFileError, ValueError, ...)
        with messages meant for the user.
        """
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHOD_LABELS.values())}")
        nfe = _check_int("NFE", nfe, 2, MAX_NFE)
        seed = _check_int("seed", seed, 0, 2**63 - 1)
        tau = _check_float("tau", tau, lambda v: v > 0, "must be a positive number")
        t0 = _check_float("t0", t0, lambda v: 0 < v < 1, "must lie strictly between 0 and 1")
        guidance = _check_float("guidance", guidance, lambda v: v >= 0, "must be a number >= 0")
        if guidance is None:
            guidance = model_defaults(self.model)["guidance"]
        if not image_path:
            raise ImageInputError("no input image: upload one or pick an example")
        _check_file_size(image_path, "the input image")
        # the demo converts what the CLI and the pipelines refuse (RGBA screenshots, grayscale), and says so
        image = load_image(image_path, name="the input image", convert=True)
        w, h = image.size
        if w * h > 4096 * 4096:
            raise ImageInputError(f"the input image is {w}x{h} pixels; the demo accepts up to 4096x4096")
        notes = []
        if "converted_from" in image.info:
            notes.append(f"input converted from mode {image.info['converted_from']} to RGB ({CONVERSIONS})")

        pipe = self.pipeline(method)
        res = self.resolution(pipe)
        mult = pipe.vae_scale_factor
        if resize:
            if image.size != (res, res):
                notes.append(f"input resized from {w}x{h} to {res}x{res} (the model's resolution)")
                image = image.resize((res, res), Image.BICUBIC)
        elif w % mult or h % mult:
            notes.append(f"input {w}x{h} is not a multiple of {mult}: resized to {res}x{res} (the model's resolution)")
            image = image.resize((res, res), Image.BICUBIC)
        elif max(w, h) > MAX_SIDE:
            raise ImageInputError(f"the input image is {w}x{h}; with resizing off the demo takes sides up to "
                                  f"{MAX_SIDE} px: turn resizing on or upload a smaller image")

        with self._busy[method]:
            src_prompt = _domain_prompt(pipe, source, "source")
            tgt_prompt = _domain_prompt(pipe, target, "target")
            generator = torch.Generator().manual_seed(seed)
            start = time.perf_counter()
            strip = None
            if method == "lsb" and trajectory:
                out = pipe(image, source_prompt=src_prompt, target_prompt=tgt_prompt, num_inference_steps=nfe,
                           guidance_scale=guidance, tau=tau, t0=t0, generator=generator, return_trajectory=True)
                output, spent = out.images[0], out.nfe
                strip = trajectory_strip(pipe, out.trajectory)
            else:
                images, spent = translate(method, pipe, image, src_prompt, tgt_prompt, nfe=nfe, guidance_scale=guidance,
                                          tau=tau, t0=t0, generator=generator)
                output = images[0]
        seconds = time.perf_counter() - start
        side = make_grid([image, output], nrow=2)
        status = (f"**{METHOD_LABELS[method]}**: {spent} UNet calls (NFE), {output.size[0]}x{output.size[1]}, "
                  f"{seconds:.1f} s. Source: `{src_prompt}`, target: `{tgt_prompt}`.")
        if notes:
            status += " Note: " + "; ".join(notes) + "."
        return output, side, strip, status


def _check_int(name, value, lo, hi) -> int:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        raise ValueError(f"{name} is required (an integer from {lo} to {hi})")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{name} must be a whole number, got {value}")
    value = int(value)
    if not lo <= value <= hi:
        raise ValueError(f"{name} must lie between {lo} and {hi}, got {value}")
    return value


def _check_float(name, value, ok, why) -> float | None:
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value) or not ok(value):
        raise ValueError(f"{name} {why}, got {value}")
    return value


def _check_file_size(path, what: str) -> None:
    size = os.path.getsize(path)
    if size > MAX_FILE_BYTES:
        raise ValueError(f"{what} is {size / 2**20:.1f} MB; the demo accepts files up to {MAX_FILE_SIZE}")


def _domain_prompt(pipe, spec, name: str) -> str:
    """A domain given as text or as the path of an uploaded learned_embeds.safetensors -> the prompt text."""
    if isinstance(spec, (str, os.PathLike)) and str(spec).endswith(".safetensors") and Path(spec).is_file():
        _check_file_size(spec, f"the {name} domain file")
        try:
            return load_domain(pipe, str(spec))
        except DomainFileError as e:  # name the upload, not its temporary path
            raise DomainFileError(str(e).replace(str(spec), f"the {name} domain file")) from None
    text = (spec or "").strip() if isinstance(spec, str) else spec
    if not text:
        raise ValueError(f"the {name} domain is empty: type a prompt or upload a learned_embeds.safetensors file")
    if str(text).endswith(".safetensors"):
        raise DomainFileError(f"the {name} domain {text!r} looks like a file name: upload the file instead")
    return str(text)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


@torch.no_grad()
def trajectory_strip(pipe, trajectory, index: int = 0, chunk: int = 8, min_tile: int = 96,
                     max_rows: int = 12) -> Image.Image:
    """One row per LSB step (top to bottom): the state x_t, the source and the target predictor, decoded.

    Rows are labelled with the step number and bridge time t; columns with what they show. Tiles smaller than
    ``min_tile`` pixels are upscaled (nearest neighbour); more than ``max_rows`` steps show evenly spaced ones.
    """
    steps = list(enumerate(trajectory))
    if len(steps) > max_rows:  # long runs: evenly spaced rows, first and last included
        keep = sorted({round(k * (len(steps) - 1) / (max_rows - 1)) for k in range(max_rows)})
        steps = [steps[k] for k in keep]
    latents = []
    for _, step in steps:
        latents += [step["x_t"][index], step["source"][index], step["target"][index]]
    batch = torch.stack(latents).to(device=pipe.vae.device, dtype=pipe.vae.dtype)
    tiles = []
    for i in range(0, len(batch), chunk):
        tiles += pipe.decode_latents(batch[i:i + chunk], output_type="pil")
    if tiles[0].height < min_tile:  # small models (the mini SD's 64 px): upscale so the labels stay legible
        scale = -(-min_tile // tiles[0].height)
        tiles = [t.resize((t.width * scale, t.height * scale), Image.NEAREST) for t in tiles]
    grid = make_grid(tiles, nrow=3)
    tile_w, tile_h = tiles[0].size
    pad = 2
    header = ["x_t", "source pred.", "target pred."]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    size = max(10, min(24, tile_h // 6))
    while size > 8 and max(probe.textlength(h, font=_font(size)) for h in header) > tile_w - 4:
        size -= 1  # the column headers must fit over their tiles
    font = _font(size)
    labels = [f"{i + 1}: t={step['t']:.2f}" for i, step in steps]
    if len(trajectory) > 1 and trajectory[-1]["t"] == trajectory[-2]["t"]:
        labels[-1] += " (final)"
    label_w = int(max(probe.textlength(s, font=font) for s in labels)) + 2 * pad + 4
    header_h = size + 2 * pad + 2
    canvas = Image.new("RGB", (grid.width + label_w, grid.height + header_h), (255, 255, 255))
    canvas.paste(grid, (label_w, header_h))
    draw = ImageDraw.Draw(canvas)
    for c, text in enumerate(header):
        x = label_w + pad + c * (tile_w + pad) + tile_w / 2
        draw.text((x, pad + 1), text, fill=(0, 0, 0), font=font, anchor="mt")
    for r, text in enumerate(labels):
        y = header_h + pad + r * (tile_h + pad) + tile_h / 2
        draw.text((pad, y), text, fill=(0, 0, 0), font=font, anchor="lm")
    return canvas


def build_demo(model: str | None = None, device=None, concurrency_limit: int = 1, max_queue: int = 16):
    """The Gradio Blocks of the demo. ``model``: a diffusers SD folder or Hub id; None: ``$LSB_DEMO_MODEL`` or the
    embedded mini SD. Nothing is loaded until the first translation."""
    import gradio as gr

    model = model or os.environ.get(MODEL_ENV) or None
    translator = Translator(model, device=device)
    defaults = model_defaults(model)
    res = model_resolution(model)
    res_text = f"{res}x{res}" if res else "the model's resolution"
    model_name = "the embedded mini SD (64x64 shapes world)" if _is_embedded(model) else f"`{model}`"

    def run(image, source_text, source_file, target_text, target_file, method, nfe, tau, t0, guidance, seed,
            resize, progress=gr.Progress(track_tqdm=True)):
        source = source_file or source_text
        target = target_file or target_text
        progress(0, desc="loading the pipeline" if method not in translator._pipes else "translating")
        try:
            return translator(image, source, target, method=method, nfe=nfe, tau=tau, t0=t0, guidance=guidance,
                              seed=seed, resize=resize)
        except _USER_ERRORS as e:
            # The UI renders the message as HTML: escape it, or "<token>" would vanish as an unknown tag.
            raise gr.Error(html.escape(str(e), quote=False), print_exception=False) from None

    class CheckedImage(gr.Image):
        """gr.Image whose unreadable uploads raise gr.Error with a message (Gradio's own is generic)."""

        is_template = True  # rendered by the stock Image frontend

        def preprocess(self, payload):
            try:
                return super().preprocess(payload)
            except gr.Error:
                raise
            except UnidentifiedImageError:
                raise gr.Error("the input image: not an image file PIL can read", print_exception=False) from None
            except Exception as e:  # noqa: BLE001 (truncated files, decompression bombs, ...)
                raise gr.Error(html.escape(f"the input image: unreadable image ({e})", quote=False),
                               print_exception=False) from None

    with gr.Blocks(title="Latent Schrödinger Bridge: image-to-image translation") as demo:
        gr.Markdown(
            "# Latent Schrödinger Bridge: unpaired image-to-image translation\n"
            f"Translate an image from a **source** domain to a **target** domain with {model_name}. Each domain is "
            "a text prompt or a learned domain (`learned_embeds.safetensors` from `lsb learn-domain`; an uploaded "
            "file replaces the text). LSB integrates the bridge ODE in NFE UNet calls; SDEdit and DDIB are the "
            "paper's baselines at the same budget.")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=320):
                image = CheckedImage(type="filepath", image_mode=None, label="Input image",
                                     sources=["upload", "clipboard"], elem_id="input-image", height=280)
                resize = gr.Checkbox(value=True, label=f"Resize to the model's resolution ({res_text})",
                                     info="Off: sizes that are multiples of 8 are kept (up to "
                                          f"{MAX_SIDE} px); others are still resized.")
                with gr.Row():
                    source_text = gr.Textbox(label="Source domain", value="a circle",
                                             placeholder="e.g. a photo of a cat, or a <token>", elem_id="source-text")
                    target_text = gr.Textbox(label="Target domain", value="a square",
                                             placeholder="e.g. a photo of a dog", elem_id="target-text")
                with gr.Row():
                    source_file = gr.File(label="or a learned source domain (.safetensors)",
                                          file_types=[".safetensors"], height=150, elem_id="source-file")
                    target_file = gr.File(label="or a learned target domain (.safetensors)",
                                          file_types=[".safetensors"], height=150, elem_id="target-file")
                method = gr.Radio([(METHOD_LABELS[m], m) for m in METHODS], value="lsb", label="Method")
                with gr.Accordion("Parameters", open=True):
                    with gr.Row():
                        nfe = gr.Slider(2, MAX_NFE, value=defaults["nfe"], step=1, label="NFE (UNet calls)")
                        t0 = gr.Slider(0.01, 0.99, value=defaults["t0"], step=0.01, label="t0 (bridge start)")
                    with gr.Row():
                        tau = gr.Number(value=defaults["tau"], label="tau (bridge noise)", minimum=0)
                        guidance = gr.Number(value=defaults["guidance"], label="guidance w", minimum=0)
                        seed = gr.Number(value=0, precision=0, minimum=0, label="seed")
                button = gr.Button("Translate", variant="primary", elem_id="translate-btn")
                rows = example_rows()
                if rows:
                    gr.Examples(rows, inputs=[image, source_text, target_text],
                                label="Examples (the shapes world of the embedded mini SD): click one to load it",
                                cache_examples=False, examples_per_page=6)
            with gr.Column(scale=1, min_width=320):
                output = gr.Image(label="Translation", format="png", interactive=False, elem_id="output-image",
                                  height=280)
                status = gr.Markdown(elem_id="status")
                side = gr.Image(label="Input | output", format="png", interactive=False, elem_id="side-by-side",
                                height=200)
                gr.Markdown("**LSB trajectory**: one row per step, in order (bridge time t); columns: the state "
                            "x_t, the source and the target predictor, decoded.")
                strip = gr.Image(label="LSB trajectory", show_label=False, format="png", interactive=False,
                                 elem_id="trajectory")
        gr.Markdown(f"Uploads up to {MAX_FILE_SIZE}. SDEdit uses tau and t0 only for its start noise level; DDIB "
                    "ignores them and the seed. The trajectory is shown for LSB only.")
        button.click(run, inputs=[image, source_text, source_file, target_text, target_file, method, nfe, tau, t0,
                                  guidance, seed, resize],
                     outputs=[output, side, strip, status], api_name="translate",
                     concurrency_limit=concurrency_limit)
    demo.queue(max_size=max_queue, default_concurrency_limit=concurrency_limit)
    demo.translator = translator
    return demo


def launch_demo(demo, server_name: str | None = None, server_port: int | None = None, share: bool = False,
                **kwargs):
    """``demo.launch`` with the demo's upload limit and CSS; returns (app, local_url, share_url)."""
    kwargs.setdefault("max_file_size", MAX_FILE_SIZE)
    kwargs.setdefault("css", DEMO_CSS)
    return demo.launch(server_name=server_name, server_port=server_port, share=share, **kwargs)


__all__ = ["build_demo", "launch_demo", "Translator", "trajectory_strip", "MODEL_ENV", "MAX_FILE_SIZE"]
