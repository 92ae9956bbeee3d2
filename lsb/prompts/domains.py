"""Learned domains: the ``learned_embeds.safetensors`` files that prompt optimization writes.

A domain file is a diffusers textual-inversion file (``{token: [n, dim]}``, metadata ``format=pt``)
that stock ``pipe.load_textual_inversion`` loads. lsb adds metadata keys (ignored by diffusers):
``lsb_prompt`` (the prompt template, e.g. ``"a {}"``), ``lsb_text_encoder`` (hidden size and
vocabulary size of the encoder it was learned for) and ``lsb_base_model``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

EMBEDS_NAME = "learned_embeds.safetensors"


class DomainFileError(ValueError):
    """A learned-domain file that cannot be used with this pipeline."""


def domain_file(spec: str | os.PathLike) -> Path | None:
    """The learned-embeddings file ``spec`` points to (file or folder holding one), or None if ``spec`` is text."""
    p = Path(spec)
    if str(spec).endswith(".safetensors") or p.exists():
        if p.is_dir():
            p = p / EMBEDS_NAME
        if not p.is_file():
            raise DomainFileError(f"{spec}: no {EMBEDS_NAME} there")
        return p
    return None


def read_domain(path: str | os.PathLike) -> tuple[str, torch.Tensor, dict]:
    """(token, embeddings [n, dim], metadata) of a learned-domain file."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            meta = f.metadata() or {}
            if len(keys) != 1:
                raise DomainFileError(f"{path}: expected one token in a learned-domain file, found {keys}")
            emb = f.get_tensor(keys[0])
    except DomainFileError:
        raise
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise DomainFileError(f"{path}: not a readable safetensors file ({e})") from None
    if emb.ndim == 1:
        emb = emb[None]
    if emb.ndim != 2:
        raise DomainFileError(f"{path}: embedding has shape {tuple(emb.shape)}, expected [vectors, dim]")
    return keys[0], emb, meta


def write_domain(path: str | os.PathLike, token: str, embeds: torch.Tensor, prompt: str = "a {}",
                 text_encoder=None, base_model: str | None = None) -> Path:
    """Write a learned domain atomically, in the format ``load_textual_inversion`` accepts."""
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / EMBEDS_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": "pt", "lsb_prompt": prompt}
    if text_encoder is not None:
        meta["lsb_text_encoder"] = json.dumps(text_encoder_signature(text_encoder))
    if base_model:
        meta["lsb_base_model"] = str(base_model)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({token: embeds.detach().float().cpu().contiguous()}, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def text_encoder_signature(text_encoder) -> dict:
    cfg = text_encoder.config
    return {"hidden_size": int(text_encoder.get_input_embeddings().weight.shape[-1]),
            "num_hidden_layers": int(getattr(cfg, "num_hidden_layers", 0)),
            "model_type": str(getattr(cfg, "model_type", ""))}


def load_domain(pipe, spec: str) -> str:
    """Turn a ``--source``/``--target`` argument into a prompt for ``pipe``.

    Text is returned unchanged. A learned-domain file is loaded into the pipeline's tokenizer and
    text encoder (once) and the prompt is its template with the token filled in.
    """
    path = domain_file(spec)
    if path is None:
        return str(spec)
    token, emb, meta = read_domain(path)
    dim = pipe.text_encoder.get_input_embeddings().weight.shape[-1]
    if emb.shape[-1] != dim:
        raise DomainFileError(f"{path}: learned for a text encoder with {emb.shape[-1]}-d embeddings, "
                              f"but this model's has {dim}: learn the domain on this model")
    sig = meta.get("lsb_text_encoder")
    if sig:
        want = json.loads(sig)
        have = text_encoder_signature(pipe.text_encoder)
        if want != have:
            raise DomainFileError(f"{path}: learned for text encoder {want}, this model has {have}")
    if token not in pipe.tokenizer.get_vocab():
        pipe.load_textual_inversion({token: emb}, token=token)
    else:
        # Already loaded (e.g. a second translation in the same process): check it is the same vectors.
        ids = pipe.tokenizer.convert_tokens_to_ids([token] + [f"{token}_{i}" for i in range(1, emb.shape[0])])
        cur = pipe.text_encoder.get_input_embeddings().weight[ids].detach().float().cpu()
        if cur.shape != emb.shape or not torch.allclose(cur, emb.float(), atol=1e-4):
            raise DomainFileError(f"{path}: token {token} is already loaded with different embeddings")
    template = meta.get("lsb_prompt", "{}")
    return template.format(token) if "{}" in template else f"{template} {token}"
