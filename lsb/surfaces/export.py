"""Export one LSB translator (base model + source/target domains + settings) as a ready Hub repository.

Layout written by :func:`export_translator` (``lsb export``)::

    model_index.json        _class_name = ["pipeline", <the LSB pipeline class, e.g. LatentSchrodingerBridgePipeline>],
                            scheduler   = ["scheduling_lsb", "LSBScheduler"]
    pipeline.py             copy of the file of lsb's pipeline class (diffusers custom-pipeline rule)
    scheduler/              scheduler_config.json (tau, t0, solver = the chosen defaults)
                            scheduling_lsb.py (re-exports lsb's LSBScheduler)
    vae/ unet/ text_encoder/ tokenizer/ ...   the base model's components (save_pretrained: self-contained), each
                            in the precision the base model stores it in (fp16 for the embedded mini SD; an fp16
                            variant is written too where the base has one); a text encoder with learned tokens
                            baked in stays float32 so the learned vectors are exact
    domains/source|target/learned_embeds.safetensors   the learned domains (provenance; only if learned)
    lsb_defaults.json       the translation defaults (lsb.io.settings): the pipeline uses them for unset arguments
    lsb_translator.json     base model, domains, prompts and the call defaults
    README.md               model card (its usage snippet runs as written on the folder and on the Hub repo)

Domains: learned embeddings are **baked in**: they are loaded into the tokenizer and text encoder
before ``save_pretrained``, so the saved tokenizer knows the tokens and nothing has to be loaded at init.
Text domains are plain prompts. Both prompts are recorded in ``lsb_translator.json["call"]``.

Translation defaults: ``lsb_defaults.json`` holds NFE, guidance, tau, t0 and the solver (the base model's own,
overridden by the values given to the export; checked before anything is written), so ``pipe(image,
source_prompt=..., target_prompt=...)`` on the export gives the same pixels as ``lsb translate --model <export>``.
``tau``/``t0``/``solver`` are also in ``scheduler/scheduler_config.json``. ``lsb_translator.json["call"]`` holds
the full keyword set (source_prompt, target_prompt, num_inference_steps, guidance_scale, tau, t0): the documented
way to use an export is ``pipe(image, **call)``; :func:`load_translator` returns both.

Loading: with stock diffusers, ``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`` (both .py
files import the installed ``lsb`` package: ``pip install lsb``). Through lsb (``lsb translate --model``, ``lsb demo
--model``, :func:`load_translator`) an export loads with the installed lsb classes and none of its code runs, so
no ``trust_remote_code`` is needed, for a folder or a Hub id.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

TRANSLATOR_FILE = "lsb_translator.json"
TAGS = ["lsb", "image-to-image", "schrodinger-bridge", "textual-inversion"]
SCHEDULER_ENTRY = ["scheduling_lsb", "LSBScheduler"]

SCHEDULER_SHIM = '''"""LSBScheduler for this repository (diffusers custom component ["scheduling_lsb", "LSBScheduler"]).

It re-exports the scheduler of the installed `lsb` package: `pip install lsb`.
"""

from lsb.schedulers.scheduling_lsb import LSBScheduler, LSBSchedulerOutput  # noqa: F401
'''


class ExportError(ValueError):
    """An export that cannot be done (reported before anything is written)."""


# ----------------------------------------------------------------------------- helpers
def check_empty_target(out: Path) -> None:
    """An ExportError unless ``out`` is missing or an empty folder."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"output folder {out} exists and is not empty; choose a new folder")


def _staging_dir(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))


def _publish(tmp: Path, out: Path) -> Path:
    """Move the finished staging folder into place (an existing empty ``out`` is replaced)."""
    check_empty_target(out)
    try:
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)  # onto a folder another run filled meanwhile: refused by the OS, nothing replaced
    except OSError as e:
        raise ExportError(f"output folder {out} was written by someone else during the export ({e.strerror})") from None
    return out


def _is_hub_id(model: str | None) -> bool:
    return (
        bool(model)
        and not Path(model).expanduser().exists()
        and model.count("/") == 1
        and not model.startswith((".", "/", "~"))
    )


def check_hub_credentials() -> str:
    """The Hugging Face token to push with; a clear error if there is none (HF_TOKEN or ``hf auth login``)."""
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise ExportError(
            "--push-to-hub needs Hugging Face credentials: set HF_TOKEN or run `hf auth login` "
            "(nothing was written or uploaded)"
        )
    return token


def push_folder(folder, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Create ``repo_id`` (if needed) and upload ``folder``; returns the repo URL."""
    from huggingface_hub import HfApi

    token = token or check_hub_credentials()
    api = HfApi(token=token)
    url = api.create_repo(repo_id, private=private or None, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="Upload LSB translator (lsb export)")
    return str(url)


def _domain_info(spec: str, prompt: str) -> dict:
    from ..prompts.domains import domain_file, read_domain

    path = domain_file(spec)
    if path is None:
        return {"kind": "text", "spec": spec, "prompt": prompt}
    token, emb, meta = read_domain(path)
    return {
        "kind": "learned",
        "spec": str(spec),
        "prompt": prompt,
        "token": token,
        "num_vectors": int(emb.shape[0]),
        "file": str(path),
    }


def _domain_name(info: dict) -> str:
    return info["token"].strip("<>") if info["kind"] == "learned" else info["spec"]


def _results_section(results_file, src: dict, tgt: dict) -> str:
    data = json.loads(Path(results_file).read_text())
    rows = data if isinstance(data, list) else [data]
    rows = [r for r in rows if isinstance(r, dict) and r.get("method", "lsb") == "lsb"]
    if not rows:
        return f"No LSB rows in `{Path(results_file).name}`.\n"
    direction = f"{_domain_name(src)}->{_domain_name(tgt)}"
    setting_keys = [k for k in ("solver", "nfe", "guidance", "t0", "tau") if any(k in r for r in rows)]
    metric_keys: list[str] = []
    for r in rows:
        for k, v in (r.get("mean") or {}).items():
            if isinstance(v, (int, float)) and k not in metric_keys:
                metric_keys.append(k)
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else ("-" if v is None else str(v))  # noqa: E731
    lines = [
        f"Benchmark results from `{Path(results_file).name}` (mean over all directions):",
        "",
        "| " + " | ".join(setting_keys + metric_keys) + " |",
        "|" + "---|" * (len(setting_keys) + len(metric_keys)),
    ]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(
                [fmt(r.get(k)) for k in setting_keys] + [fmt((r.get("mean") or {}).get(k)) for k in metric_keys]
            )
            + " |"
        )
    pair = [(r, d) for r in rows for d in r.get("directions", []) or [] if d.get("direction") == direction]
    if pair:
        keys = [k for k, v in pair[0][1].items() if isinstance(v, (int, float))]
        lines += [
            "",
            f"This pair ({direction}):",
            "",
            "| " + " | ".join(setting_keys + keys) + " |",
            "|" + "---|" * (len(setting_keys) + len(keys)),
        ]
        for r, d in pair:
            lines.append(
                "| " + " | ".join([fmt(r.get(k)) for k in setting_keys] + [fmt(d.get(k)) for k in keys]) + " |"
            )
    return "\n".join(lines) + "\n"


def _model_card(info: dict, repo_id: str | None, results_file=None, res: int = 512):
    from huggingface_hub import ModelCard, ModelCardData

    base = info["base_model"]
    data = ModelCardData(
        base_model=base if _is_hub_id(base) else None,
        tags=list(TAGS),
        library_name="diffusers",
        pipeline_tag="image-to-image",
    )
    src, tgt, call = info["source"], info["target"], info["call"]
    repo = repo_id or info.get("folder") or "path/to/this/folder"

    def describe(d):
        if d["kind"] == "learned":
            return f"learned token `{d['token']}` ({d['num_vectors']} vector(s)), prompt `{d['prompt']}`"
        return f"text prompt `{d['prompt']}`"

    text = f"""---
{data.to_yaml()}
---

# LSB translator: {_domain_name(src)} → {_domain_name(tgt)}

Unpaired image-to-image translation with a **Latent Schrödinger Bridge** (Kim, Kim & Ye 2024,
arXiv 2411.14863) on a Stable Diffusion model, exported with `lsb export`.

* Base model: `{base}` (all components are included here; the repository is self-contained)
* Source domain: {describe(src)}
* Target domain: {describe(tgt)}
* Defaults: NFE {call["num_inference_steps"]}, guidance {call["guidance_scale"]}, τ {call["tau"]}, t0 {call["t0"]},
  solver `{info["solver"]}` (τ, t0 and the solver are also in `scheduler/scheduler_config.json`)

Learned domain tokens are already in the tokenizer and text encoder. `lsb_translator.json` records the
base model, the domains and the call arguments.

## Usage

The pipeline code (`pipeline.py`, `scheduler/scheduling_lsb.py`) imports the `lsb` package: `pip install lsb`,
then load with `trust_remote_code=True` (review the code first; pin a `revision`). `repo` is this repository's
Hub id or its local folder.

```python
import json, os, torch
from diffusers import DiffusionPipeline
from huggingface_hub import snapshot_download
from PIL import Image

repo = "{repo}"
folder = repo if os.path.isdir(repo) else snapshot_download(repo)  # a local folder, or the Hub repo's files
pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
with open(os.path.join(folder, "{TRANSLATOR_FILE}")) as f:
    call = json.load(f)["call"]  # prompts + defaults
image = Image.open("input.png").convert("RGB").resize(({res}, {res}))  # the model's resolution
out = pipe(image, generator=torch.Generator().manual_seed(0), **call).images[0]
out.save("output.png")
```

or, with lsb (no `trust_remote_code`: the installed lsb classes are used): `from lsb.surfaces.export import
load_translator; pipe, call = load_translator(repo)`, or `lsb translate --model {repo} --source "{call["source_prompt"]}"
--target "{call["target_prompt"]}" input.png -o out` (the defaults come from `lsb_defaults.json`).

## Results

"""
    text += _results_section(results_file, src, tgt) if results_file else "No benchmark numbers were given at export.\n"
    return ModelCard(text)


# ----------------------------------------------------------------------------- precision
def stored_dtype(folder, component: str):
    """The floating dtype ``folder/component`` stores its weights in (its non-variant safetensors files; the most
    common floating dtype by element count), or None when unknown (no such local files)."""
    import torch
    from safetensors import safe_open

    files = [f for f in sorted(Path(folder, component).glob("*.safetensors")) if f.name.count(".") == 1]
    counts: dict = {}
    for f in files:
        with safe_open(str(f), framework="pt") as sf:
            for k in sf.keys():
                sl = sf.get_slice(k)
                dtype = getattr(
                    torch,
                    {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}.get(sl.get_dtype(), ""),
                    None,
                )
                if isinstance(dtype, torch.dtype):
                    n = 1
                    for d in sl.get_shape():
                        n *= d
                    counts[dtype] = counts.get(dtype, 0) + n
    return max(counts, key=counts.get) if counts else None


def stored_variants(folder, component: str) -> list[str]:
    """The weight variants (``diffusion_pytorch_model.<variant>.safetensors``) ``folder/component`` has."""
    found = set()
    for f in Path(folder, component).glob("*.safetensors"):
        parts = f.name.split(".")
        if len(parts) == 3:
            found.add(parts[1].split("-")[0])
    return sorted(v for v in found if v in ("fp16", "bf16"))


def _cast(module, dtype) -> None:
    """``module.to(dtype)``; diffusers' override (which warns on every model, kept-in-fp32 modules or not) only
    where the model keeps modules in float32."""
    import torch

    if getattr(module, "_keep_in_fp32_modules", None):
        module.to(dtype)
    else:
        torch.nn.Module.to(module, dtype)


def _save_in_stored_precision(pipe, source_folder, tmp: Path, keep_fp32=()) -> dict:
    """``pipe.save_pretrained(tmp)`` with each component in the precision ``source_folder`` stores it in (float32
    where unknown or listed in ``keep_fp32``), plus the source's fp16/bf16 variants; returns name -> dtype str."""
    import torch

    modules = {n: c for n, c in pipe.components.items() if isinstance(c, torch.nn.Module)}
    chosen = {}
    for name, module in modules.items():
        dtype = stored_dtype(source_folder, name) if source_folder else None
        dtype = torch.float32 if dtype is None or name in keep_fp32 else dtype
        _cast(module, dtype)
        chosen[name] = str(dtype).replace("torch.", "")
    pipe.save_pretrained(tmp)
    for name, module in modules.items():
        for variant in stored_variants(source_folder, name) if source_folder else []:
            if name not in keep_fp32:
                _cast(module, getattr(torch, {"fp16": "float16", "bf16": "bfloat16"}[variant]))
                module.save_pretrained(tmp / name, variant=variant)
    return chosen


def _source_folder(model) -> Path | None:
    """The local folder of the base model (the embedded one, a folder, or a cached Hub snapshot), if any."""
    from ..helpers.loading import resolve_model

    path = Path(resolve_model(model))
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(model), local_files_only=True))
    except Exception:  # noqa: BLE001 (not cached as a snapshot): float32
        return None


# ----------------------------------------------------------------------------- translator export
def export_settings(model, nfe=None, tau=None, t0=None, guidance=None, solver=None):
    """The export's translation defaults: the base model's (``lsb_defaults.json``, else the paper's) with the given
    values replacing them, checked (ValueError naming the option: NaN guidance, tau <= 0, t0 outside (0, 1),
    NFE < 2, unknown solver)."""
    from ..io.settings import TranslationDefaults, check_guidance, check_nfe, check_t0, check_tau, translation_defaults

    d = translation_defaults(model).as_dict()
    if nfe is not None:
        d["num_inference_steps"] = check_nfe(nfe, name="--nfe")
    if tau is not None:
        d["tau"] = check_tau(tau, name="--tau")
    if t0 is not None:
        d["t0"] = check_t0(t0, name="--t0")
    if guidance is not None:
        d["guidance_scale"] = check_guidance(guidance, name="--guidance")
    if solver is not None:
        d["solver"] = solver
    try:
        return TranslationDefaults(**d)
    except ValueError as e:
        raise ExportError(str(e)) from None


def export_translator(
    output,
    source: str,
    target: str,
    model: str | None = None,
    *,
    nfe: int | None = None,
    tau: float | None = None,
    t0: float | None = None,
    guidance: float | None = None,
    solver: str | None = None,
    results=None,
    repo_id: str | None = None,
) -> Path:
    """Write a Hub-ready folder for the translator ``model`` + ``source`` -> ``target`` (see module doc).

    Refuses a non-empty ``output`` and invalid settings before writing anything; builds everything in a temporary
    sibling folder and renames it at the end. Unset settings are the base model's defaults
    (:func:`lsb.io.settings.translation_defaults`: the tuned ones for the embedded model, else the paper's).
    """
    import inspect

    from ..families import native_resolution
    from .translators import load_translator as load_base
    from ..io.settings import write_translation_defaults
    from ..prompts.domains import load_domain
    from ..schedulers import LSBScheduler

    out = Path(output)
    check_empty_target(out)
    if results is not None and not Path(results).is_file():
        raise ExportError(f"--results {results}: no such file")
    settings = export_settings(model, nfe=nfe, tau=tau, t0=t0, guidance=guidance, solver=solver)

    pipe = load_base("lsb", model, device="cpu", trust_remote_code=False)
    pipe.scheduler = LSBScheduler.from_config(
        pipe.scheduler.config, tau=settings.tau, t0=settings.t0, solver=settings.solver
    )  # validates
    src_prompt, tgt_prompt = load_domain(pipe, source), load_domain(pipe, target)  # learned tokens: baked in
    info = _translator_info(model, settings, _domain_info(source, src_prompt), _domain_info(target, tgt_prompt))
    learned = any(info[r]["kind"] == "learned" for r in ("source", "target"))
    text_encoders = [n for n in pipe.components if n.startswith("text_encoder")]
    pipeline_file = Path(inspect.getfile(type(pipe)))
    res = native_resolution(pipe)  # the family's native side (lsb.families)
    tmp = _staging_dir(out)
    try:
        info["precision"] = _save_in_stored_precision(
            pipe, _source_folder(model), tmp, keep_fp32=text_encoders if learned else ()
        )
        _ship_code(tmp, type(pipe).__name__, pipeline_file)
        _copy_learned_domains(tmp, info)
        write_translation_defaults(tmp, settings)
        (tmp / TRANSLATOR_FILE).write_text(json.dumps(info, indent=2, allow_nan=False) + "\n")
        card_info = dict(info, folder=str(out.resolve()))
        _model_card(card_info, repo_id, results, res=res).save(str(tmp / "README.md"))
        return _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _translator_info(model, settings, source: dict, target: dict) -> dict:
    """The ``lsb_translator.json`` record: versions, base model, method, solver, both domains and the call."""
    import diffusers

    import lsb

    return {
        "format": 1,
        "lsb_version": lsb.__version__,
        "diffusers_version": diffusers.__version__,
        "base_model": model or "mini-sd",
        "method": "lsb",
        "solver": settings.solver,
        "source": source,
        "target": target,
        "call": {
            "source_prompt": source["prompt"],
            "target_prompt": target["prompt"],
            "num_inference_steps": settings.num_inference_steps,
            "guidance_scale": settings.guidance_scale,
            "tau": settings.tau,
            "t0": settings.t0,
        },
    }


def _ship_code(tmp: Path, pipeline_class: str, pipeline_file: Path) -> None:
    """Point the saved ``model_index.json`` at the shipped ``pipeline.py`` and the scheduler shim, and copy them."""
    index_path = tmp / "model_index.json"
    index = json.loads(index_path.read_text())
    index["_class_name"] = ["pipeline", pipeline_class]
    index["scheduler"] = SCHEDULER_ENTRY  # lsb's loader maps it back to the installed class
    index.pop("_name_or_path", None)  # a local path means nothing on the Hub; base model is in the json
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    shutil.copyfile(pipeline_file, tmp / "pipeline.py")
    (tmp / "scheduler" / "scheduling_lsb.py").write_text(SCHEDULER_SHIM)


def _copy_learned_domains(tmp: Path, info: dict) -> None:
    """Copy each learned domain file into ``domains/<role>/`` and record that path in ``info``."""
    for role in ("source", "target"):
        dom = info[role]
        if dom["kind"] == "learned":
            dest = tmp / "domains" / role / "learned_embeds.safetensors"
            dest.parent.mkdir(parents=True)
            shutil.copyfile(dom.pop("file"), dest)
            dom["file"] = f"domains/{role}/learned_embeds.safetensors"


def read_translator_info(folder) -> dict:
    """``lsb_translator.json`` of an exported folder or Hub repo."""
    p = Path(folder)
    if p.is_dir():
        f = p / TRANSLATOR_FILE
        if not f.is_file():
            raise ExportError(f"{p}: no {TRANSLATOR_FILE}; not an `lsb export` folder")
    else:
        from huggingface_hub import hf_hub_download

        f = hf_hub_download(str(folder), TRANSLATOR_FILE)
    return json.loads(Path(f).read_text())


def local_translator_info(model) -> dict | None:
    """``lsb_translator.json`` of a local export folder, None for anything else (no download)."""
    if not model or not Path(str(model)).expanduser().is_dir():
        return None
    f = Path(str(model)).expanduser() / TRANSLATOR_FILE
    try:
        return json.loads(f.read_text()) if f.is_file() else None
    except (OSError, ValueError):
        return None


def load_translator(folder, trust_remote_code: bool = False, device="cpu", **from_pretrained_kwargs):
    """(pipeline, call kwargs) of an exported translator (folder or Hub id): ``pipe(image, generator=..., **call)``.

    By default the pipeline is built with the installed lsb classes (the class named in ``model_index.json``, the
    LSBScheduler): none of the repository's code runs, for a Hub id or a folder. ``trust_remote_code=True`` loads
    the repository's own ``pipeline.py`` / ``scheduler/scheduling_lsb.py`` with stock diffusers instead.
    """
    info = read_translator_info(folder)
    if trust_remote_code:
        from diffusers import DiffusionPipeline

        pipe = DiffusionPipeline.from_pretrained(str(folder), trust_remote_code=True, **from_pretrained_kwargs)
        return pipe.to(device), dict(info["call"])
    import lsb

    from .translators import export_components
    from ..helpers.loading import load_pipeline, read_model_index

    name = read_model_index(str(folder)).get("_class_name")
    name = name[1] if isinstance(name, list) else name
    if name not in lsb.pipeline_class_names():
        raise ExportError(
            f"{folder}: pipeline class {name!r} is not one of lsb's; load it with "
            f"trust_remote_code=True after reviewing its pipeline.py"
        )
    pipe = load_pipeline(
        getattr(lsb, name),
        str(folder),
        device=device,
        trust_remote_code=False,
        known=export_components(),
        **from_pretrained_kwargs,
    )
    return pipe, dict(info["call"])


# ----------------------------------------------------------------------------- concepts (domains alone)
def export_concept(domain, output, concept_type: str = "object") -> Path:
    """Write a learned domain in the sd-concepts-library layout: ``learned_embeds.safetensors``,
    ``token_identifier.txt``, ``type_of_concept.txt`` and a ``README.md`` card. ``domain`` is a
    learned_embeds.safetensors file or a folder holding one. Refuses a non-empty ``output``."""
    from huggingface_hub import ModelCard, ModelCardData

    from ..prompts.domains import EMBEDS_NAME, DomainFileError, domain_file, read_domain

    out = Path(output)
    check_empty_target(out)
    path = domain_file(domain)
    if path is None:
        raise DomainFileError(f"{domain}: not a learned-domain file or folder")
    token, emb, meta = read_domain(path)
    base = meta.get("lsb_base_model")
    prompt = meta.get("lsb_prompt", "{}")
    example = prompt.format(token) if "{}" in prompt else f"{prompt} {token}"
    data = ModelCardData(
        base_model=base if _is_hub_id(base) else None, tags=["lsb", "textual-inversion"], library_name="diffusers"
    )
    card = ModelCard(f"""---
{data.to_yaml()}
---

# Learned domain `{token}`

A textual-inversion embedding ({emb.shape[0]} vector(s) of dimension {emb.shape[1]}) learned with `lsb learn-domain`
(base model: `{base or "unknown"}`). Prompt: `{example}`.

```python
pipe.load_textual_inversion("path/or/repo")        # stock diffusers
# or, with lsb (checks the text encoder, returns the prompt):
from lsb.surfaces.export import load_concept
prompt = load_concept(pipe, "path/or/repo")
```
""")
    tmp = _staging_dir(out)
    try:
        shutil.copyfile(path, tmp / EMBEDS_NAME)
        (tmp / "token_identifier.txt").write_text(token)
        (tmp / "type_of_concept.txt").write_text(concept_type)
        card.save(str(tmp / "README.md"))
        return _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_concept(pipe, folder) -> str:
    """Load an sd-concepts-library folder (or Hub repo) into ``pipe``; returns the domain's prompt."""
    from ..prompts.domains import EMBEDS_NAME, DomainFileError, load_domain

    p = Path(folder)
    if not p.is_dir():
        from huggingface_hub import snapshot_download

        p = Path(snapshot_download(str(folder), allow_patterns=["*.safetensors", "*.txt"]))
    if not (p / EMBEDS_NAME).is_file():
        raise DomainFileError(f"{folder}: no {EMBEDS_NAME}")
    prompt = load_domain(pipe, str(p))
    tok_file = p / "token_identifier.txt"
    if tok_file.is_file() and tok_file.read_text().strip() not in prompt:
        raise DomainFileError(
            f"{folder}: token_identifier.txt names {tok_file.read_text().strip()!r}, "
            f"which the embeddings file does not define"
        )
    return prompt
