"""Where the shipped assets live: the embedded models (diffusers folder layout) and helper nets."""

from pathlib import Path

#: the package's assets folder
ASSETS = Path(__file__).resolve().parents[1] / "assets"
MINI_SD = str(ASSETS / "mini-sd")
"""Path of the embedded mini Stable Diffusion (SD 1.x architecture, VP, 64 px; a diffusers folder), trained on the
shapes world: ``StableDiffusionPipeline.from_pretrained(lsb.MINI_SD)`` loads it."""
MINI_SD3 = str(ASSETS / "mini-sd3")
"""Path of the embedded mini Stable Diffusion 3 (SD3 architecture, rectified flow, 64 px; a diffusers folder), trained
on the shapes world: ``StableDiffusion3Pipeline.from_pretrained(lsb.MINI_SD3)`` loads it."""
#: what users may write for the embedded models (``--model``), and where they live; None and "" mean the mini SD
EMBEDDED_MODELS = {"mini-sd": MINI_SD, "embedded": MINI_SD, "mini-sd3": MINI_SD3}


def embedded_path(model) -> str | None:
    """The folder of an embedded model name (None, "", "mini-sd", "embedded", "mini-sd3"), else None."""
    if model in (None, ""):
        return MINI_SD
    return EMBEDDED_MODELS.get(model) if isinstance(model, str) else None


#: The shipped one-step students of the embedded mini SD (``lsb distill``): ``STUDENTS / "circle-square"``, ...
STUDENTS = ASSETS / "students"


def default_to_float32(component_dir) -> None:
    """Make a saved transformers component (e.g. ``<model>/text_encoder``) load in float32 when no dtype is given.

    transformers' ``dtype="auto"`` takes the config's ``dtype``, which ``save_pretrained`` sets to the weights'
    (float16 for half-precision files), while diffusers loads UNets / VAEs in float32 unless asked: a half-precision
    text encoder then meets a float32 UNet (``StableDiffusionPipeline.from_pretrained(folder)`` on CPU fails with a
    Half/Float mismatch). The weights stay as stored; ``dtype=torch.float16`` still gives half precision.
    """
    import json

    cfg = Path(component_dir) / "config.json"
    data = json.loads(cfg.read_text())
    for key in ("dtype", "torch_dtype"):
        if key in data:
            data[key] = "float32"
    cfg.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def folder_bytes(path) -> int:
    """The size on disk of every file below ``path``, in bytes."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def replace_folder(src, dest) -> Path:
    """Copy the folder ``src`` to ``dest``, replacing what was there (copied next to it first, then renamed)."""
    import shutil

    dest = Path(dest)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest
