"""A Gradio demo of unpaired image-to-image translation: LSB next to the SDEdit and DDIB baselines.

    python app.py                      # the embedded mini SD, or $LSB_DEMO_MODEL
    lsb demo [--model PATH] [--domains DIR] [--port N] [--share]

:func:`build_demo` builds the ``gr.Blocks`` (pipelines load lazily on the first translation and are cached,
one per method); :func:`launch_demo` starts it with the demo's upload limit. The main event is exposed as the
API endpoint ``/translate``, so ``gradio_client.Client(url).predict(..., api_name="/translate")`` works.

Input images: with "Resize to the model's resolution" on (the default), every input is resized to the
model's square training resolution (64x64 for the embedded mini SD). With it off, an image whose sides are
multiples of 8 keeps its size (up to the pixel limit below); one whose sides are not is still
resized to the model's resolution, and the status line says so.

Hardening (the demo may face the internet with ``--share``):

* Learned domains come only from **uploads** (files in Gradio's upload folder) or from the **server's domain
  folder** (``--domains DIR`` / ``$LSB_DEMO_DOMAINS``: ``DIR/<name>/learned_embeds.safetensors`` or
  ``DIR/<name>.safetensors``, offered by name in a dropdown). A domain typed as text is only ever a prompt;
  text that looks like a file path is refused with one message that does not depend on whether the path
  exists, and no file is touched. Error messages never show tensor key names.
* A **pixel limit** (``max_pixels``: with resizing off, inputs above it are refused before any compute;
  default 4x the model's native area) and a **time limit** per translation (``time_limit`` seconds, checked
  before every UNet call; default :data:`TIME_LIMIT`).
* Gradio **analytics off** unless ``GRADIO_ANALYTICS_ENABLED=True`` is set explicitly.
"""

from __future__ import annotations

import html
import math
import os
import re
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from ..families import detect_family, embedded_path, native_resolution, pixel_multiple
from .methods import METHODS, check_method, methods_for
from .translators import load_translator, translate
from ..prompts.domains import DomainFileError, load_domain
from ..io.images import CONVERSIONS, ImageInputError, load_image, make_grid
from ..helpers.loading import ModelFolderError
from ..helpers.memory import memory_options
from ..prompts.tokens import UnknownTokenError

#: Environment variable naming the model the demo serves (a diffusers SD folder or Hub id).
MODEL_ENV = "LSB_DEMO_MODEL"
#: Upload limit (Gradio's ``max_file_size``), also checked on the files the event receives.
MAX_FILE_SIZE = "5mb"
MAX_FILE_BYTES = 5 * 1024 * 1024
#: Environment variables: the server's folder of learned domains, the pixel limit, the per-translation time limit.
DOMAINS_ENV = "LSB_DEMO_DOMAINS"
MAX_PIXELS_ENV = "LSB_DEMO_MAX_PIXELS"
TIME_LIMIT_ENV = "LSB_DEMO_TIME_LIMIT"
#: Default pixel limit with resizing off: this many times the model's native area (128x128 on the mini SD).
MAX_PIXELS_FACTOR = 4
#: Default seconds one translation may take (checked before each UNet call).
TIME_LIMIT = 120.0
#: Uploads are decoded up to this many pixels (then resized or refused by ``max_pixels``).
MAX_UPLOAD_PIXELS = 4096 * 4096
MAX_NFE = 100
NO_DOMAIN = "(none)"
#: what the page calls each method (from the method registry, lsb.surfaces.methods), and the one-step students
STUDENT = "student"
METHOD_LABELS = {**{name: m.label for name, m in METHODS.items()}, STUDENT: "Student (1 call)"}
#: the example gallery shipped inside the package (shapes-world scenes for the embedded models)
EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "assets" / "gallery"
#: (folder, source prompt, target prompt) for the shipped example images (the shapes world of the mini SD).
EXAMPLE_PROMPTS = {
    "circles": ("a circle", "a square"),
    "squares": ("a square", "a triangle"),
    "triangles": ("a triangle", "a circle"),
}

#: Small outputs (the mini SD's 64 px) are scaled up to fill their boxes, without blurring.
DEMO_CSS = """
#input-image img, #output-image img, #side-by-side img {
    width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated;
}
#trajectory img { width: auto; height: auto; max-width: 100%; object-fit: contain; }
#trajectory .image-frame { padding-top: 2.4rem; }  /* keep the corner buttons off the column headers */
"""


class TranslationTimeout(ValueError):
    """A translation that ran past the demo's per-request time limit."""


_USER_ERRORS = (
    ImageInputError,
    UnknownTokenError,
    DomainFileError,
    ModelFolderError,
    ValueError,
    TypeError,
    FloatingPointError,
)


def analytics_off() -> bool:
    """Turn Gradio's analytics off unless the user set ``GRADIO_ANALYTICS_ENABLED=True``; True when off."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    return os.environ["GRADIO_ANALYTICS_ENABLED"] != "True"


def find_domains(folder) -> dict[str, Path]:
    """The learned domains the server offers: name -> file, from ``folder`` (``<name>/learned_embeds.safetensors``
    or ``<name>.safetensors``; symbolic links leaving the folder are skipped). Empty for None."""
    from ..prompts.domains import EMBEDS_NAME

    if not folder:
        return {}
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ValueError(f"domain folder {folder} does not exist or is not a folder")
    root = root.resolve()
    found = {}
    for p in sorted(root.iterdir()):
        f = p / EMBEDS_NAME if p.is_dir() else p
        name = p.name if p.is_dir() else p.name[: -len(".safetensors")]
        if f.name.endswith(".safetensors") and f.is_file() and f.resolve().is_relative_to(root) and name:
            found[name] = f.resolve()
    return found


def _env_number(name, cast):
    raw = os.environ.get(name)
    if raw in (None, ""):
        return None
    try:
        return cast(raw)
    except ValueError:
        raise ValueError(f"${name} must be a number, got {raw!r}") from None


def _is_embedded(model: str | None) -> bool:
    return embedded_path(model) is not None


def _model_source(model: str | None):
    """``model`` as the settings readers take it: None for the embedded mini SD, a folder for other embedded names."""
    return None if model in (None, "", "mini-sd", "embedded") else (embedded_path(model) or model)


def model_defaults(model: str | None, method: str = "lsb") -> dict:
    """NFE / tau / t0 / guidance defaults of ``model`` for ``method`` (LSB, SDEdit, DDIB:
    :func:`lsb.io.settings.translation_defaults`, the folder's ``lsb_defaults.json`` else the paper's; FlowEdit: the
    family's published edit steps n_max and target guidance), and the prompts of an ``lsb export`` folder."""
    from .export import local_translator_info
    from ..io.settings import translation_defaults

    d = translation_defaults(_model_source(model))
    out = dict(nfe=d.num_inference_steps, tau=d.tau, t0=d.t0, guidance=d.guidance_scale)
    if method == "flowedit":
        published = detect_family(model).method_defaults["flowedit"]
        out.update(nfe=published["n_max"], guidance=published["target_guidance_scale"])
    info = None if _is_embedded(model) else local_translator_info(model)
    if info is not None:
        out.update(source=info["call"]["source_prompt"], target=info["call"]["target_prompt"])
    return out


def model_resolution(model: str | None) -> int | None:
    """The square resolution a model was built for (:func:`lsb.families.native_resolution`), if known here."""
    return native_resolution(model)


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

    def __init__(
        self,
        model: str | None = None,
        device=None,
        domains=None,
        max_pixels: int | None = None,
        time_limit: float | None = TIME_LIMIT,
        trust_remote_code: bool | None = None,
        dtype=None,
        offload: str | None = None,
        quantize: str | None = None,
    ):
        self.model = model or None
        self.device = device
        self.dtype = dtype
        #: the model's family (read before any weights load; an unsupported model fails here, before serving)
        self.family = detect_family(_model_source(self.model))
        #: --offload / --quantize, checked now (device, backend, the memory estimate): before serving
        self.memory = {"offload": offload, "quantize": quantize}
        if offload or quantize or Path(str(_model_source(self.model))).is_dir():
            memory_options(_model_source(self.model), self.family, device, dtype, **self.memory)
        #: the methods offered: those of the family, from the method registry
        self.methods = tuple(m.name for m in methods_for(self.family))
        #: the shipped one-step students of this model (lsb distill; the embedded mini SD's), offered as a method
        self.students = _shipped_students_for(self.model)
        if self.students:
            self.methods += (STUDENT,)
        #: name -> file of the server's learned domains (see :func:`find_domains`)
        self.domains = dict(domains) if isinstance(domains, dict) else find_domains(domains)
        if max_pixels is not None and (isinstance(max_pixels, bool) or int(max_pixels) < 64):
            raise ValueError(f"max_pixels must be an integer of at least 64, got {max_pixels}")
        self.max_pixels = None if max_pixels is None else int(max_pixels)
        if time_limit is not None and not (math.isfinite(time_limit) and time_limit > 0):
            raise ValueError(f"time_limit must be a positive number of seconds, got {time_limit}")
        self.time_limit = time_limit
        self.trust_remote_code = trust_remote_code
        self._pipes: dict[str, object] = {}
        self._lock = threading.Lock()
        # One translation at a time per pipeline (its scheduler and tokenizer are stateful), whatever the
        # queue's concurrency limit.
        self._busy = {m: threading.Lock() for m in self.methods}

    def pipeline(self, method: str, student: str | None = None):
        if method == STUDENT:
            return self._student_pipeline(student)
        with self._lock:
            if method not in self._pipes:
                self._pipes[method] = load_translator(
                    method,
                    _model_source(self.model),
                    device=self.device,
                    dtype=self.dtype,
                    trust_remote_code=self.trust_remote_code,
                    **self.memory,
                )
            return self._pipes[method]

    def _student_pipeline(self, name):
        """The shipped student ``name`` (loaded once): its base model, domains and settings fixed."""
        if name not in self.students:
            raise ValueError(f"pick a student: one of {', '.join(self.students) or 'none shipped'}")
        key = f"{STUDENT}:{name}"
        with self._lock:
            if key not in self._pipes:
                from .students import load_student

                self._pipes[key] = load_student(self.students[name], device=self.device)
            return self._pipes[key]

    def _deadline(self, pipe, nfe: int) -> _Deadline:
        denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
        return _Deadline(denoiser, self.time_limit, nfe)

    def _domain_prompt(self, pipe, spec, name: str) -> str:
        """A domain (text, ("upload", path) or ("server", name)) -> the prompt text."""
        if isinstance(spec, tuple) and len(spec) == 2 and spec[0] in ("upload", "server"):
            kind, value = spec
            if kind == "server":
                path, label = self.domain_file(value), f"the {name} domain {value!r}"
            else:
                path, label = _uploaded_file(value, name), f"the {name} domain file"
                _check_file_size(path, label)
            try:
                return load_domain(pipe, str(path))
            except DomainFileError as e:  # name the upload, not its path; never list tensor names
                raise DomainFileError(
                    _without_key_names(str(e).replace(str(path), label).replace(str(value), label))
                ) from None
        if not isinstance(spec, str):
            raise ValueError(f"the {name} domain must be text or an uploaded learned_embeds.safetensors file")
        text = spec.strip()
        if not text:
            raise ValueError(f"the {name} domain is empty: type a prompt or upload a learned_embeds.safetensors file")
        if _looks_like_path(text):  # never touch the file system for typed text: one answer for any path
            raise DomainFileError(
                f"the {name} domain looks like a file path; domain files are not read from the "
                f"server: upload the file" + (" or pick a server domain" if self.domains else "")
            )
        return text

    def resolution(self, pipe) -> int:
        """The model's native side (px), from its family record (:func:`lsb.families.native_resolution`)."""
        return native_resolution(pipe)

    def pixel_limit(self, pipe) -> int:
        """Most pixels an input may have with resizing off: ``max_pixels``, else 4x the model's native area."""
        return self.max_pixels or MAX_PIXELS_FACTOR * self.resolution(pipe) ** 2

    def domain_file(self, name) -> Path | None:
        """The server's learned domain called ``name`` (from the dropdown), None for no choice."""
        if name in (None, "", NO_DOMAIN):
            return None
        if not isinstance(name, str) or name not in self.domains:
            raise DomainFileError("unknown server domain; pick one from the list")
        return self.domains[name]

    def __call__(
        self,
        image_path,
        source,
        target,
        method: str = "lsb",
        nfe: int | None = None,
        tau: float | None = None,
        t0: float | None = None,
        guidance: float | None = None,
        seed: int = 0,
        resize: bool = True,
        trajectory: bool = True,
        mask=None,
        student: str | None = None,
    ):
        """Translate one image file. Returns (output, side_by_side, trajectory strip or None, notes).

        ``mask``: translate a region only: an image editor value painted on the input (its layers' painted pixels may
        change), or a mask picture / array of the input's size (white = may change); None or nothing painted: the
        whole image. The side-by-side then shows input | mask | output.

        ``source`` / ``target``: a text prompt (str), or ``("upload", path)`` for a learned-domain file uploaded
        through Gradio, or ``("server", name)`` for one of the server's domains (:attr:`domains`). Text is never
        opened as a file.

        Raises the lsb user errors (ImageInputError, UnknownTokenError, DomainFileError, ValueError, ...)
        with messages meant for the user.
        """
        if method == STUDENT:
            return self._student_call(image_path, student, seed)
        nfe, seed, tau, t0, guidance = self._settings(method, nfe, seed, tau, t0, guidance)
        image, notes = _read_input(image_path)
        region = editor_mask(mask, image.size)
        pipe = self.pipeline(method)
        image = self._fit(pipe, image, resize, notes)
        if region is not None and region.size != image.size:  # the mask follows its image's resize
            region = region.resize(image.size, Image.NEAREST)
        masked = {} if region is None else {"mask_image": region}
        with self._busy[method], self._deadline(pipe, nfe):
            src_prompt = self._domain_prompt(pipe, source, "source")
            tgt_prompt = self._domain_prompt(pipe, target, "target")
            generator = torch.Generator().manual_seed(seed)
            start = time.perf_counter()
            strip = None
            if method == "lsb" and trajectory:
                out = pipe(
                    image,
                    source_prompt=src_prompt,
                    target_prompt=tgt_prompt,
                    num_inference_steps=nfe,
                    guidance_scale=guidance,
                    tau=tau,
                    t0=t0,
                    generator=generator,
                    return_trajectory=True,
                    **masked,
                )
                output, spent = out.images[0], out.nfe
                strip = trajectory_strip(pipe, out.trajectory)
            else:
                kw = dict(nfe=nfe, guidance_scale=guidance, tau=tau, t0=t0, generator=generator, **masked)
                images, spent = translate(method, pipe, image, src_prompt, tgt_prompt, **kw)
                output = images[0]
        seconds = time.perf_counter() - start
        side = make_grid([image, output], nrow=2) if region is None else make_grid([image, region, output], nrow=3)
        status = (
            f"**{METHOD_LABELS[method]}**: {spent} network calls (NFE), {output.size[0]}x{output.size[1]}, "
            f"{seconds:.1f} s. Source: `{src_prompt}`, target: `{tgt_prompt}`."
        )
        if region is not None:
            status += " Region: only the painted pixels could change (input | mask | output below)."
        if notes:
            status += " Note: " + "; ".join(notes) + "."
        return output, side, strip, status

    def _student_call(self, image_path, student, seed):
        """One network call with a shipped student (its domains and settings are its own; the page's are unused)."""
        seed = _check_int("seed", seed, 0, 2**63 - 1)
        image, notes = _read_input(image_path)
        pipe = self.pipeline(STUDENT, student)
        image = self._fit(pipe, image, True, notes)
        with self._busy[STUDENT], self._deadline(pipe, 1):
            start = time.perf_counter()
            images, spent = translate(STUDENT, pipe, image, None, None, generator=torch.Generator().manual_seed(seed))
        output, settings = images[0], pipe.student_settings
        status = (
            f"**{METHOD_LABELS[STUDENT]}** `{student}`: {spent} network call, {output.size[0]}x{output.size[1]}, "
            f"{time.perf_counter() - start:.1f} s. Source: `{settings['source_prompt']}`, target: "
            f"`{settings['target_prompt']}` (fixed by the student)."
        )
        if notes:
            status += " Note: " + "; ".join(notes) + "."
        return output, make_grid([image, output], nrow=2), None, status

    def _settings(self, method, nfe, seed, tau, t0, guidance):
        """The checked settings of one request; unset NFE / guidance: the model's defaults for ``method``."""
        if method not in METHODS:
            labels = ", ".join(METHOD_LABELS[m] for m in self.methods)
            raise ValueError(f"unknown method {method!r}; choose one of {labels}")
        check_method(method, self.family)
        if nfe is None:  # the model's own (its lsb_defaults.json), as the CLI and the pipeline
            nfe = model_defaults(self.model, method)["nfe"]
        nfe = _check_int("NFE", nfe, 2, MAX_NFE)
        seed = _check_int("seed", seed, 0, 2**63 - 1)
        tau = _check_float("tau", tau, lambda v: v > 0, "must be a positive number")
        t0 = _check_float("t0", t0, lambda v: 0 < v < 1, "must lie strictly between 0 and 1")
        guidance = _check_float("guidance", guidance, lambda v: v >= 0, "must be a number >= 0")
        if guidance is None:
            guidance = model_defaults(self.model, method)["guidance"]
        return nfe, seed, tau, t0, guidance

    def _fit(self, pipe, image, resize: bool, notes: list) -> Image.Image:
        """``image`` at the model's resolution (resize on), or kept when the family's packing takes its size and it is
        within the pixel limit (resize off); ``notes`` says what changed."""
        w, h = image.size
        res = self.resolution(pipe)
        mult = pixel_multiple(pipe)
        if resize:
            if image.size != (res, res):
                notes.append(f"input resized from {w}x{h} to {res}x{res} (the model's resolution)")
                image = image.resize((res, res), Image.BICUBIC)
        elif w % mult or h % mult:
            notes.append(f"input {w}x{h} is not a multiple of {mult}: resized to {res}x{res} (the model's resolution)")
            image = image.resize((res, res), Image.BICUBIC)
        elif w * h > self.pixel_limit(pipe):
            raise ImageInputError(
                f"the input image is {w}x{h} = {w * h} pixels; with resizing off this demo takes "
                f"up to {self.pixel_limit(pipe)}: turn resizing on or upload a smaller image"
            )
        return image


def _shipped_students_for(model) -> dict:
    """name -> folder of the shipped students (lsb/assets/students) when ``model`` is the embedded mini SD they were
    distilled on; {} for any other model."""
    if model not in (None, "", "mini-sd", "embedded"):
        return {}
    from .students import shipped_students

    return dict(shipped_students())


def _read_input(image_path) -> tuple[Image.Image, list[str]]:
    """The uploaded image, converted to RGB when it is not (the demo converts what the CLI and the pipelines refuse,
    and says so), and the notes saying what was done."""
    if not image_path:
        raise ImageInputError("no input image: upload one or pick an example")
    _check_file_size(image_path, "the input image")
    image = load_image(image_path, name="the input image", convert=True)
    w, h = image.size
    if w * h > MAX_UPLOAD_PIXELS:
        raise ImageInputError(f"the input image is {w}x{h} pixels; the demo accepts up to 4096x4096")
    notes = []
    if "converted_from" in image.info:
        notes.append(f"input converted from mode {image.info['converted_from']} to RGB ({CONVERSIONS})")
    return image, notes


def editor_mask(value, size: tuple[int, int]):
    """The region mask (PIL "L", white = may change) of a demo mask input, or None for no region: an image editor
    value (a dict whose ``layers`` are RGBA pictures painted on the input: every painted pixel may change; nothing
    painted: None), or a mask picture / array (white = may change) that must have the input's ``size``."""
    if value is None:
        return None
    if isinstance(value, dict):
        painted = None
        for layer in value.get("layers") or []:
            alpha = np.asarray(layer)
            alpha = alpha[..., 3] > 0 if alpha.ndim == 3 and alpha.shape[-1] == 4 else alpha.max(axis=-1) > 0
            painted = alpha if painted is None else painted | alpha
        if painted is None or not painted.any():
            return None
        mask = Image.fromarray(np.where(painted, 255, 0).astype(np.uint8), "L")
    else:
        mask = value if isinstance(value, Image.Image) else Image.fromarray(np.asarray(value))
        mask = mask.convert("L")
    if mask.size != tuple(size):
        raise ImageInputError(
            f"the mask is {mask.size[0]}x{mask.size[1]} but the input image is {size[0]}x{size[1]}: paint it on the input"
        )
    return mask


def mask_canvas(image_path):
    """The mask editor's value for a new input: the input as background, no painting yet (None: no input)."""
    if not image_path:
        return None
    try:
        background = load_image(image_path, name="the input image", convert=True)
    except ImageInputError:
        return None  # the translation reports the bad input
    return {"background": np.asarray(background), "layers": [], "composite": np.asarray(background)}


class _Deadline:
    """Context manager: a forward pre-hook on the denoiser that stops the translation past ``limit`` seconds."""

    def __init__(self, module, limit: float | None, nfe: int):
        self.module, self.limit, self.nfe, self.calls, self.handle = module, limit, nfe, 0, None

    def hook(self, *_):
        if time.perf_counter() > self.end:
            raise TranslationTimeout(
                f"the translation ran past this demo's time limit of {self.limit:g} s (after "
                f"{self.calls} of about {self.nfe} network calls): lower NFE or the image size"
            )
        self.calls += 1

    def __enter__(self):
        if self.limit is not None and self.module is not None:
            self.end = time.perf_counter() + self.limit
            self.handle = self.module.register_forward_pre_hook(self.hook)
        return self

    def __exit__(self, *exc):
        if self.handle is not None:
            self.handle.remove()
        return False


def _looks_like_path(text: str) -> bool:
    return text.endswith(".safetensors") or "/" in text or "\\" in text or text.startswith("~")


def _without_key_names(message: str) -> str:
    """A domain-file error with any list of tensor names replaced by their count."""
    return re.sub(r"\[(?:'[^']*'(?:, )?)*\]", lambda m: f"{m.group(0).count(chr(39)) // 2} tensor(s)", message)


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


def _uploaded_file(path, name: str) -> Path:
    """``path`` if it is a file in Gradio's upload folder; the same refusal for any other path, existing or not."""
    from gradio.utils import get_upload_folder

    refusal = DomainFileError(f"the {name} domain file must be uploaded through the page")
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise refusal
    root = Path(get_upload_folder()).resolve()
    p = Path(path).resolve()
    if not p.is_relative_to(root) or not p.is_file():
        raise refusal
    return p


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


@torch.no_grad()
def trajectory_strip(
    pipe, trajectory, index: int = 0, chunk: int = 8, min_tile: int = 96, max_rows: int = 12
) -> Image.Image:
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
        tiles += pipe.decode_latents(batch[i : i + chunk], output_type="pil")
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


def _page_settings(model, translator) -> dict:
    """What the page states and starts with: the model's name, resolution and pixel limit, its defaults, the methods
    its family offers and the server's domains."""
    res = model_resolution(model)
    limit = translator.max_pixels or (MAX_PIXELS_FACTOR * res * res if res else None)
    if _is_embedded(model):
        model_name = (
            f"the embedded {'mini SD3' if translator.family.base == 'flow' else 'mini SD'} (64x64 shapes world)"
        )
    else:
        model_name = f"`{model}` ({translator.family.label})"
    return dict(
        model_name=model_name,
        res_text=f"{res}x{res}" if res else "the model's resolution",
        limit_text=f"{limit} pixels" if limit else f"{MAX_PIXELS_FACTOR}x the model's native area",
        defaults=model_defaults(model),
        methods=[(METHOD_LABELS[m], m) for m in translator.methods],
        server_domains=[NO_DOMAIN] + list(translator.domains),
        students=list(translator.students),
    )


def _run_function(gr, translator):
    """The click handler: picks each domain (upload > server domain > text) and maps user errors to gr.Error."""

    def pick(text, upload, server):
        if upload:
            return ("upload", upload)
        if server not in (None, "", NO_DOMAIN):
            return ("server", server)
        return text

    def run(
        image,
        source_text,
        source_file,
        target_text,
        target_file,
        method,
        nfe,
        tau,
        t0,
        guidance,
        seed,
        resize,
        source_domain=NO_DOMAIN,
        target_domain=NO_DOMAIN,
        mask=None,
        student=None,
        progress=gr.Progress(track_tqdm=True),
    ):
        source = pick(source_text, source_file, source_domain)
        target = pick(target_text, target_file, target_domain)
        progress(0, desc="loading the pipeline" if method not in translator._pipes else "translating")
        try:
            return translator(
                image, source, target, method=method, nfe=nfe, tau=tau, t0=t0, guidance=guidance, seed=seed,
                resize=resize, mask=mask, student=student,
            )  # fmt: skip
        except _USER_ERRORS as e:
            # The UI renders the message as HTML: escape it, or "<token>" would vanish as an unknown tag.
            raise gr.Error(html.escape(str(e), quote=False), print_exception=False) from None

    return run


def _checked_image_class(gr):
    """gr.Image whose unreadable uploads raise gr.Error with a message (Gradio's own is generic)."""

    class CheckedImage(gr.Image):
        is_template = True  # rendered by the stock Image frontend

        def preprocess(self, payload):
            try:
                return super().preprocess(payload)
            except gr.Error:
                raise
            except UnidentifiedImageError:
                raise gr.Error("the input image: not an image file PIL can read", print_exception=False) from None
            except Exception as e:  # noqa: BLE001 (truncated files, decompression bombs, ...)
                raise gr.Error(
                    html.escape(f"the input image: unreadable image ({e})", quote=False), print_exception=False
                ) from None

    return CheckedImage


def _domain_inputs(gr, page) -> dict:
    """The source / target domain widgets: text, an uploaded learned-domain file, a server domain."""
    d, ui = page["defaults"], {}
    with gr.Row():
        ui["source_text"] = gr.Textbox(
            label="Source domain", value=d.get("source", "a circle"),
            placeholder="e.g. a photo of a cat, or a <token>", elem_id="source-text",
        )  # fmt: skip
        ui["target_text"] = gr.Textbox(
            label="Target domain", value=d.get("target", "a square"), placeholder="e.g. a photo of a dog",
            elem_id="target-text",
        )  # fmt: skip
    with gr.Row():
        for side in ("source", "target"):
            ui[f"{side}_file"] = gr.File(
                label=f"or a learned {side} domain (.safetensors)", file_types=[".safetensors"], height=150,
                elem_id=f"{side}-file",
            )  # fmt: skip
    with gr.Row(visible=len(page["server_domains"]) > 1):
        for side in ("source", "target"):
            ui[f"{side}_domain"] = gr.Dropdown(
                page["server_domains"], value=NO_DOMAIN, label=f"or a server domain ({side})", elem_id=f"{side}-domain"
            )
    return ui


def _parameter_inputs(gr, page, model) -> dict:
    """The method (the family's, from the registry) and its parameters; picking a method loads its defaults."""
    d, ui = page["defaults"], {}
    ui["method"] = gr.Radio(page["methods"], value="lsb", label="Method")
    students = page["students"]
    ui["student"] = gr.Dropdown(
        students or [NO_DOMAIN], value=students[0] if students else NO_DOMAIN, visible=bool(students),
        label="Student (one network call; it fixes the domains and settings)", elem_id="student",
    )  # fmt: skip
    with gr.Accordion("Parameters", open=True):
        with gr.Row():
            ui["nfe"] = gr.Slider(2, MAX_NFE, value=d["nfe"], step=1, label="NFE (network calls)")
            ui["t0"] = gr.Slider(0.01, 0.99, value=d["t0"], step=0.01, label="t0 (bridge start)")
        with gr.Row():
            ui["tau"] = gr.Number(value=d["tau"], label="tau (bridge noise)", minimum=0)
            ui["guidance"] = gr.Number(value=d["guidance"], label="guidance w", minimum=0)
            ui["seed"] = gr.Number(value=0, precision=0, minimum=0, label="seed")

    def method_defaults(method):
        if method == STUDENT:
            return gr.update(), gr.update()
        m = model_defaults(model, method)
        return gr.update(value=m["nfe"]), gr.update(value=m["guidance"])

    ui["method"].change(method_defaults, inputs=ui["method"], outputs=[ui["nfe"], ui["guidance"]], api_name=False)
    return ui


def _input_column(gr, page, model) -> dict:
    """The left column: image, resize switch, domains, method and parameters, button, example gallery."""
    ui = {}
    ui["image"] = _checked_image_class(gr)(
        type="filepath", image_mode=None, label="Input image", sources=["upload", "clipboard"],
        elem_id="input-image", height=280,
    )  # fmt: skip
    with gr.Accordion("Region (optional): paint where the image may change", open=False):
        ui["mask"] = gr.ImageEditor(
            label="Mask: painted pixels may change, the rest stays the input's",
            type="numpy",
            sources=[],
            layers=False,
            transforms=[],
            brush=gr.Brush(colors=["#ff00ff"], color_mode="fixed"),
            elem_id="mask-editor",
            height=280,
        )
    ui["image"].change(mask_canvas, inputs=ui["image"], outputs=ui["mask"], api_visibility="private")
    ui["resize"] = gr.Checkbox(
        value=True,
        label=f"Resize to the model's resolution ({page['res_text']})",
        info=f"Off: sizes the model takes are kept (up to {page['limit_text']}); others are still resized.",
    )
    ui.update(_domain_inputs(gr, page))
    ui.update(_parameter_inputs(gr, page, model))
    ui["button"] = gr.Button("Translate", variant="primary", elem_id="translate-btn")
    rows = example_rows()
    if rows:
        gr.Examples(
            rows,
            inputs=[ui["image"], ui["source_text"], ui["target_text"]],
            label="Examples (shapes-world scenes shipped with lsb): click one to load it",
            cache_examples=False,
            examples_per_page=6,
        )
    return ui


def _output_column(gr) -> dict:
    """The right column: translation, status, side by side, LSB trajectory."""
    ui = {}
    ui["output"] = gr.Image(label="Translation", format="png", interactive=False, elem_id="output-image", height=280)
    ui["status"] = gr.Markdown(elem_id="status")
    ui["side"] = gr.Image(label="Input | output", format="png", interactive=False, elem_id="side-by-side", height=200)
    gr.Markdown(
        "**LSB trajectory**: one row per step, in order (bridge time t); columns: the state "
        "x_t, the source and the target predictor, decoded."
    )
    ui["strip"] = gr.Image(
        label="LSB trajectory", show_label=False, format="png", interactive=False, elem_id="trajectory"
    )
    return ui


#: the click handler's inputs, in the order of ``run``'s parameters (the ``/translate`` API takes them so)
_RUN_INPUTS = (
    "image", "source_text", "source_file", "target_text", "target_file", "method", "nfe", "tau", "t0", "guidance",
    "seed", "resize", "source_domain", "target_domain", "mask", "student",
)  # fmt: skip


def build_demo(
    model: str | None = None,
    device=None,
    concurrency_limit: int = 1,
    max_queue: int = 16,
    domains=None,
    max_pixels: int | None = None,
    time_limit: float | None = None,
    trust_remote_code: bool | None = None,
    dtype=None,
    offload: str | None = None,
    quantize: str | None = None,
):
    """The Gradio Blocks of the demo. ``model``: a diffusers folder of any supported family (SD 1.x/2.x, SDXL, SD3,
    FLUX.1), an embedded name ("mini-sd3"), an ``lsb export`` folder or a Hub id; None: ``$LSB_DEMO_MODEL`` or the
    embedded mini SD. The page offers the methods of the model's family (:mod:`lsb.surfaces.methods`).
    ``domains``: the server's folder of learned domains (None: ``$LSB_DEMO_DOMAINS``, else none); ``max_pixels`` /
    ``time_limit``: see the module doc (None: ``$LSB_DEMO_MAX_PIXELS`` / ``$LSB_DEMO_TIME_LIMIT``, else the
    defaults); ``dtype``: the model's precision (None / "auto": the family's); ``offload`` / ``quantize``: see
    :func:`lsb.surfaces.translators.load_translator`. The family is read (an unsupported
    model refused) at once; weights load at the first translation. Gradio analytics are off unless
    ``GRADIO_ANALYTICS_ENABLED=True``."""
    off = analytics_off()  # before gradio is imported: it reads the variable at import and at Blocks()
    import gradio as gr

    model = model or os.environ.get(MODEL_ENV) or None
    domains = domains if domains is not None else os.environ.get(DOMAINS_ENV) or None
    max_pixels = max_pixels if max_pixels is not None else _env_number(MAX_PIXELS_ENV, int)
    time_limit = time_limit if time_limit is not None else _env_number(TIME_LIMIT_ENV, float) or TIME_LIMIT
    translator = Translator(
        model, device=device, domains=domains, max_pixels=max_pixels, time_limit=time_limit,
        trust_remote_code=trust_remote_code, dtype=dtype, offload=offload, quantize=quantize,
    )  # fmt: skip
    page = _page_settings(model, translator)
    labels = [label for label, _ in page["methods"]]
    with gr.Blocks(title="Latent Schrödinger Bridge: image-to-image translation", analytics_enabled=not off) as demo:
        gr.Markdown(
            "# Latent Schrödinger Bridge: unpaired image-to-image translation\n"
            f"Translate an image from a **source** domain to a **target** domain with {page['model_name']}. Each "
            "domain is a text prompt or a learned domain (`learned_embeds.safetensors` from `lsb learn-domain`; an "
            "uploaded file replaces the text). LSB integrates the bridge ODE in NFE network calls; "
            f"{', '.join(labels[1:])} run at the same budget for comparison."
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=320):
                ui = _input_column(gr, page, model)
            with gr.Column(scale=1, min_width=320):
                out = _output_column(gr)
        gr.Markdown(
            f"Uploads up to {MAX_FILE_SIZE}; with resizing off, images up to {page['limit_text']}; each translation "
            f"may take up to {translator.time_limit:g} s. SDEdit uses tau and t0 only for its start noise level; DDIB "
            "and FlowEdit ignore them (FlowEdit: NFE = its edit steps, guidance = the target's). The trajectory is "
            "shown for LSB only."
        )
        ui["button"].click(
            _run_function(gr, translator),
            inputs=[ui[name] for name in _RUN_INPUTS],
            outputs=[out["output"], out["side"], out["strip"], out["status"]],
            api_name="translate",
            concurrency_limit=concurrency_limit,
        )
    demo.queue(max_size=max_queue, default_concurrency_limit=concurrency_limit)
    demo.translator = translator
    return demo


SHARE_HINT = "To create a public link, run `lsb demo --share` (anyone with the link can use this server)."


def launch_demo(demo, server_name: str | None = None, server_port: int | None = None, share: bool = False, **kwargs):
    """``demo.launch`` with the demo's upload limit and CSS; returns (app, local_url, share_url).

    Gradio's own start-up lines are replaced by the local (and public) URL and a hint naming ``lsb demo --share``;
    ``quiet=True`` prints nothing."""
    kwargs.setdefault("max_file_size", MAX_FILE_SIZE)
    kwargs.setdefault("css", DEMO_CSS)
    quiet = kwargs.pop("quiet", False)
    block = not kwargs.pop("prevent_thread_lock", False)
    app, local_url, share_url = demo.launch(
        server_name=server_name, server_port=server_port, share=share, quiet=True, prevent_thread_lock=True, **kwargs
    )
    if not quiet:
        print(f"* Running on local URL: {local_url}")
        print(f"* Running on public URL: {share_url}" if share_url else f"* {SHARE_HINT}", flush=True)
    if block and not getattr(sys, "ps1", sys.flags.interactive):  # as Gradio: scripts block, interactive sessions not
        demo.block_thread()
    return app, local_url, share_url


__all__ = [
    "build_demo",
    "launch_demo",
    "Translator",
    "TranslationTimeout",
    "find_domains",
    "trajectory_strip",
    "MODEL_ENV",
    "DOMAINS_ENV",
    "MAX_PIXELS_ENV",
    "TIME_LIMIT_ENV",
    "MAX_FILE_SIZE",
    "TIME_LIMIT",
]
