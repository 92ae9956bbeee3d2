"""Export one LSB translator (base model + source/target domains + settings) as a ready Hub repository.

Layout written by :func:`export_translator` (``lsb export``)::

    model_index.json        _class_name = ["pipeline", "LatentSchrodingerBridgePipeline"],
                            scheduler   = ["scheduling_lsb", "LSBScheduler"]
    pipeline.py             copy of lsb's pipelines/lsb/pipeline.py (diffusers custom-pipeline rule)
    scheduler/              scheduler_config.json (tau, t0, solver = the chosen defaults)
                            scheduling_lsb.py (re-exports lsb's LSBScheduler)
    vae/ unet/ text_encoder/ tokenizer/   the base model's components (save_pretrained: self-contained)
    domains/source|target/learned_embeds.safetensors   the learned domains (provenance; only if learned)
    lsb_translator.json     base model, domains, prompts and the call defaults
    README.md               model card

Domains: learned embeddings are **baked in**: they are loaded into the tokenizer and text encoder
before ``save_pretrained``, so the saved tokenizer knows the tokens and nothing has to be loaded at init.
Text domains are plain prompts. Both prompts are recorded in ``lsb_translator.json["call"]``.

Translation defaults: ``tau``/``t0``/``solver`` live in ``scheduler/scheduler_config.json`` (the pipeline
reads tau/t0 from the scheduler when not passed); NFE and guidance are call arguments. The pipeline class
cannot read defaults from the repo, so ``lsb_translator.json["call"]`` holds the full keyword set
(source_prompt, target_prompt, num_inference_steps, guidance_scale, tau, t0) and the documented way to use
an export is ``pipe(image, **call)``; :func:`load_translator` returns both.

Requirements to load: ``pip install lsb`` (both .py files import the installed ``lsb`` package) and
``trust_remote_code=True`` (diffusers refuses to run ``pipeline.py`` otherwise).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

TRANSLATOR_FILE = "lsb_translator.json"
TAGS = ["lsb", "image-to-image", "schrodinger-bridge", "textual-inversion"]
PIPELINE_ENTRY = ["pipeline", "LatentSchrodingerBridgePipeline"]
SCHEDULER_ENTRY = ["scheduling_lsb", "LSBScheduler"]

SCHEDULER_SHIM = '''"""LSBScheduler for this repository (diffusers custom component ["scheduling_lsb", "LSBScheduler"]).

It re-exports the scheduler of the installed `lsb` package: `pip install lsb`.
"""

from lsb.schedulers.scheduling_lsb import LSBScheduler, LSBSchedulerOutput  # noqa: F401
'''


class ExportError(ValueError):
    """An export that cannot be done (reported before anything is written)."""


# ----------------------------------------------------------------------------- helpers
def _check_empty_target(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"output folder {out} exists and is not empty; choose a new folder")


def _staging_dir(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))


def _publish(tmp: Path, out: Path) -> Path:
    """Move the finished staging folder into place (an existing empty ``out`` is replaced)."""
    _check_empty_target(out)
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)
    return out


def _is_hub_id(model: str | None) -> bool:
    return bool(model) and not Path(model).expanduser().exists() and model.count("/") == 1 \
        and not model.startswith((".", "/", "~"))


def check_hub_credentials() -> str:
    """The Hugging Face token to push with; a clear error if there is none (HF_TOKEN or ``hf auth login``)."""
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise ExportError("--push-to-hub needs Hugging Face credentials: set HF_TOKEN or run `hf auth login` "
                          "(nothing was written or uploaded)")
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
    return {"kind": "learned", "spec": str(spec), "prompt": prompt, "token": token,
            "num_vectors": int(emb.shape[0]), "file": str(path)}


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
    lines = [f"Benchmark results from `{Path(results_file).name}` (mean over all directions):", "",
             "| " + " | ".join(setting_keys + metric_keys) + " |", "|" + "---|" * (len(setting_keys) + len(metric_keys))]
    for r in rows:
        lines.append("| " + " | ".join([fmt(r.get(k)) for k in setting_keys]
                                       + [fmt((r.get("mean") or {}).get(k)) for k in metric_keys]) + " |")
    pair = [(r, d) for r in rows for d in r.get("directions", []) or [] if d.get("direction") == direction]
    if pair:
        keys = [k for k, v in pair[0][1].items() if isinstance(v, (int, float))]
        lines += ["", f"This pair ({direction}):", "", "| " + " | ".join(setting_keys + keys) + " |",
                  "|" + "---|" * (len(setting_keys) + len(keys))]
        for r, d in pair:
            lines.append("| " + " | ".join([fmt(r.get(k)) for k in setting_keys] + [fmt(d.get(k)) for k in keys]) + " |")
    return "\n".join(lines) + "\n"


def _model_card(info: dict, repo_id: str | None, results_file=None):
    from huggingface_hub import ModelCard, ModelCardData

    base = info["base_model"]
    data = ModelCardData(base_model=base if _is_hub_id(base) else None, tags=list(TAGS), library_name="diffusers",
                         pipeline_tag="image-to-image")
    src, tgt, call = info["source"], info["target"], info["call"]
    repo = repo_id or "path/to/this/folder"
    describe = lambda d: (f"learned token `{d['token']}` ({d['num_vectors']} vector(s)), prompt `{d['prompt']}`"  # noqa: E731
                          if d["kind"] == "learned" else f"text prompt `{d['prompt']}`")
    text = f"""---
{data.to_yaml()}
---

# LSB translator: {_domain_name(src)} → {_domain_name(tgt)}

Unpaired image-to-image translation with a **Latent Schrödinger Bridge** (Kim, Kim & Ye 2024,
arXiv 2411.14863) on a Stable Diffusion model, exported with `lsb export`.

* Base model: `{base}` (all components are included here; the repository is self-contained)
* Source domain: {describe(src)}
* Target domain: {describe(tgt)}
* Defaults: NFE {call['num_inference_steps']}, guidance {call['guidance_scale']}, τ {call['tau']}, t0 {call['t0']},
  solver `{info['solver']}` (τ, t0 and the solver are also in `scheduler/scheduler_config.json`)

Learned domain tokens are already in the tokenizer and text encoder. `lsb_translator.json` records the
base model, the domains and the call arguments.

## Usage

The pipeline code (`pipeline.py`, `scheduler/scheduling_lsb.py`) imports the `lsb` package: `pip install lsb`,
then load with `trust_remote_code=True` (review the code first; pin a `revision`).

```python
import json, torch
from diffusers import DiffusionPipeline
from huggingface_hub import hf_hub_download
from PIL import Image

repo = "{repo}"
pipe = DiffusionPipeline.from_pretrained(repo, trust_remote_code=True)
call = json.load(open(hf_hub_download(repo, "{TRANSLATOR_FILE}")))["call"]  # prompts + defaults
image = Image.open("input.png").convert("RGB")  # sides multiples of 8
out = pipe(image, generator=torch.Generator().manual_seed(0), **call).images[0]
```

or, with lsb: `from lsb.surfaces.export import load_translator; pipe, call = load_translator(repo)`.

## Results

"""
    text += _results_section(results_file, src, tgt) if results_file else "No benchmark numbers were given at export.\n"
    return ModelCard(text)


# ----------------------------------------------------------------------------- translator export
def export_translator(output, source: str, target: str, model: str | None = None, *, nfe: int | None = None,
                      tau: float | None = None, t0: float | None = None, guidance: float | None = None,
                      solver: str | None = None, results=None, repo_id: str | None = None) -> Path:
    """Write a Hub-ready folder for the translator ``model`` + ``source`` -> ``target`` (see module doc).

    Refuses a non-empty ``output``; builds everything in a temporary sibling folder and renames it at the end.
    Defaults for unset settings are ``lsb translate``'s (the mini-SD ones for the embedded model).
    """
    import diffusers

    import lsb

    from .translators import load_translator as load_base
    from .cli import MINI_SD_TRANSLATE_DEFAULTS, TRANSLATE_DEFAULTS
    from ..prompts.domains import load_domain
    from ..schedulers import LSBScheduler

    out = Path(output)
    _check_empty_target(out)
    if results is not None and not Path(results).is_file():
        raise ExportError(f"--results {results}: no such file")
    d = MINI_SD_TRANSLATE_DEFAULTS if model in (None, "mini-sd") else TRANSLATE_DEFAULTS
    nfe = d["nfe"] if nfe is None else int(nfe)
    tau = d["tau"] if tau is None else float(tau)
    t0 = d["t0"] if t0 is None else float(t0)
    guidance = d["guidance"] if guidance is None else float(guidance)
    solver = solver or d["solver"]
    if nfe < 2:
        raise ExportError(f"--nfe must be at least 2, got {nfe}")

    pipe = load_base("lsb", model, device="cpu")
    pipe.scheduler = LSBScheduler.from_config(pipe.scheduler.config, tau=tau, t0=t0, solver=solver)  # validates
    src_prompt, tgt_prompt = load_domain(pipe, source), load_domain(pipe, target)  # learned tokens: baked in
    info = {
        "format": 1, "lsb_version": lsb.__version__, "diffusers_version": diffusers.__version__,
        "base_model": model or "mini-sd", "method": "lsb", "solver": solver,
        "source": _domain_info(source, src_prompt), "target": _domain_info(target, tgt_prompt),
        "call": {"source_prompt": src_prompt, "target_prompt": tgt_prompt, "num_inference_steps": nfe,
                 "guidance_scale": guidance, "tau": tau, "t0": t0},
    }
    tmp = _staging_dir(out)
    try:
        pipe.save_pretrained(tmp)
        index_path = tmp / "model_index.json"
        index = json.loads(index_path.read_text())
        index["_class_name"] = PIPELINE_ENTRY
        index["scheduler"] = SCHEDULER_ENTRY
        index.pop("_name_or_path", None)  # a local path means nothing on the Hub; base model is in the json
        index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        shutil.copyfile(Path(lsb.pipeline_dir("lsb")) / "pipeline.py", tmp / "pipeline.py")
        (tmp / "scheduler" / "scheduling_lsb.py").write_text(SCHEDULER_SHIM)
        for role in ("source", "target"):
            dom = info[role]
            if dom["kind"] == "learned":
                dest = tmp / "domains" / role / "learned_embeds.safetensors"
                dest.parent.mkdir(parents=True)
                shutil.copyfile(dom.pop("file"), dest)
                dom["file"] = f"domains/{role}/learned_embeds.safetensors"
        (tmp / TRANSLATOR_FILE).write_text(json.dumps(info, indent=2) + "\n")
        _model_card(info, repo_id, results).save(str(tmp / "README.md"))
        return _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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


def load_translator(folder, **from_pretrained_kwargs):
    """(pipeline, call kwargs) of an exported translator: ``pipe(image, generator=..., **call)`` translates.

    Loads with ``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`` (the repo's own
    ``pipeline.py`` and ``scheduler/scheduling_lsb.py``).
    """
    from diffusers import DiffusionPipeline

    info = read_translator_info(folder)
    from_pretrained_kwargs.setdefault("trust_remote_code", True)
    pipe = DiffusionPipeline.from_pretrained(str(folder), **from_pretrained_kwargs)
    return pipe, dict(info["call"])


# ----------------------------------------------------------------------------- concepts (domains alone)
def export_concept(domain, output, concept_type: str = "object") -> Path:
    """Write a learned domain in the sd-concepts-library layout: ``learned_embeds.safetensors``,
    ``token_identifier.txt``, ``type_of_concept.txt`` and a ``README.md`` card. ``domain`` is a
    learned_embeds.safetensors file or a folder holding one. Refuses a non-empty ``output``."""
    from huggingface_hub import ModelCard, ModelCardData

    from ..prompts.domains import EMBEDS_NAME, DomainFileError, domain_file, read_domain

    out = Path(output)
    _check_empty_target(out)
    path = domain_file(domain)
    if path is None:
        raise DomainFileError(f"{domain}: not a learned-domain file or folder")
    token, emb, meta = read_domain(path)
    base = meta.get("lsb_base_model")
    prompt = meta.get("lsb_prompt", "{}")
    example = prompt.format(token) if "{}" in prompt else f"{prompt} {token}"
    data = ModelCardData(base_model=base if _is_hub_id(base) else None, tags=["lsb", "textual-inversion"],
                         library_name="diffusers")
    card = ModelCard(f"""---
{data.to_yaml()}
---

# Learned domain `{token}`

A textual-inversion embedding ({emb.shape[0]} vector(s) of dimension {emb.shape[1]}) learned with `lsb learn-domain`
(base model: `{base or 'unknown'}`). Prompt: `{example}`.

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
        raise DomainFileError(f"{folder}: token_identifier.txt names {tok_file.read_text().strip()!r}, "
                              f"which the embeddings file does not define")
    return prompt
