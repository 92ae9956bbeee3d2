"""Learned domains: the ``learned_embeds.safetensors`` files that prompt optimization writes.

A domain file is a diffusers textual-inversion file (``{token: [n, dim]}``, metadata ``format=pt``)
that stock ``pipe.load_textual_inversion`` loads. lsb adds metadata keys (ignored by diffusers):
``lsb_prompt`` (the prompt template, e.g. ``"a {}"``), ``lsb_text_encoder`` (hidden size and
vocabulary size of the encoder it was learned for) and ``lsb_base_model``.

Models with several text encoders (SDXL, SD3, FLUX) get one file keyed per encoder, ``{"clip_l": [n, d_l],
"clip_g": [n, d_g], "t5xxl": [n, d_t5]}`` (the keys of :mod:`lsb.prompts.encoder_slots`, as SDXL / SD3
embedding files are shared), with the token in metadata ``lsb_token`` and the family in ``lsb_family``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..io.files import atomic_path

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


def write_domain(
    path: str | os.PathLike,
    token: str,
    embeds: torch.Tensor | dict[str, torch.Tensor],
    prompt: str = "a {}",
    text_encoder=None,
    base_model: str | None = None,
    family: str | None = None,
) -> Path:
    """Write a learned domain atomically: one tensor -> the format ``load_textual_inversion`` accepts
    (``{token: [n, dim]}``); a dict ``{encoder key: [n, dim]}`` -> the multi-encoder format (``text_encoder``
    then is a dict ``{encoder key: text encoder}`` for the signatures)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / EMBEDS_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": "pt", "lsb_prompt": prompt}
    if isinstance(embeds, dict):
        tensors = {k: v.detach().float().cpu().contiguous() for k, v in embeds.items()}
        meta["lsb_token"] = token
        if family:
            meta["lsb_family"] = family
        if text_encoder is not None:
            meta["lsb_text_encoders"] = json.dumps({k: text_encoder_signature(te) for k, te in text_encoder.items()})
    else:
        tensors = {token: embeds.detach().float().cpu().contiguous()}
        if text_encoder is not None:
            meta["lsb_text_encoder"] = json.dumps(text_encoder_signature(text_encoder))
    if base_model:
        meta["lsb_base_model"] = str(base_model)
    with atomic_path(path) as tmp:  # THE atomic write (lsb.io.files)
        save_file(tensors, str(tmp), metadata=meta)
    return path


def text_encoder_signature(text_encoder) -> dict:
    cfg = text_encoder.config
    return {
        "hidden_size": int(text_encoder.get_input_embeddings().weight.shape[-1]),
        "num_hidden_layers": int(getattr(cfg, "num_hidden_layers", 0)),
        "model_type": str(getattr(cfg, "model_type", "")),
    }


def read_domain_embeddings(path: str | os.PathLike) -> tuple[str, dict[str, torch.Tensor], dict]:
    """(token, ``{encoder key: [n, dim]}``, metadata) of a multi-encoder domain file.

    The token is metadata ``lsb_token``; files from elsewhere (e.g. SDXL's ``clip_l`` / ``clip_g`` embeddings)
    have none and get ``<file stem>``.
    """
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            embeds = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise DomainFileError(f"{path}: not a readable safetensors file ({e})") from None
    for k, v in list(embeds.items()):
        embeds[k] = v[None] if v.ndim == 1 else v
        if embeds[k].ndim != 2:
            raise DomainFileError(f"{path}: embedding {k!r} has shape {tuple(v.shape)}, expected [vectors, dim]")
    if len({v.shape[0] for v in embeds.values()}) > 1:
        raise DomainFileError(
            f"{path}: the encoders' embeddings have different vector counts "
            f"{ {k: v.shape[0] for k, v in embeds.items()} }"
        )
    return meta.get("lsb_token") or f"<{path.stem}>", embeds, meta


def insert_token_embeddings(
    tokenizer, text_encoder, token: str, embeds: torch.Tensor, where: str = "", tokenizer_just_extended: bool = False
) -> bool:
    """Add ``token`` (``token_1``, ... for several vectors) to one tokenizer / text encoder with the rows
    ``embeds`` [n, dim]; a token already loaded must carry the same vectors (else DomainFileError).

    ``tokenizer_just_extended``: the tokenizer object is shared with an encoder loaded a moment ago (two encoders,
    one tokenizer), so its having the token says nothing about this encoder's rows: they are written. Returns
    whether the tokenizer was extended here."""
    names = [token] + [f"{token}_{i}" for i in range(1, embeds.shape[0])]
    weight = text_encoder.get_input_embeddings().weight
    if embeds.shape[-1] != weight.shape[-1]:
        raise DomainFileError(
            f"{where}: learned for a text encoder with {embeds.shape[-1]}-d embeddings, but this "
            f"model's has {weight.shape[-1]}: learn the domain on this model"
        )
    extended = token not in tokenizer.get_vocab()
    if not extended and not tokenizer_just_extended:
        ids = tokenizer.convert_tokens_to_ids(names)
        cur = weight[ids].detach().float().cpu() if max(ids) < weight.shape[0] else None
        if cur is None or cur.shape != embeds.shape or not torch.allclose(cur, embeds.float(), atol=1e-4):
            raise DomainFileError(f"{where}: token {token} is already loaded with different embeddings")
        return False
    if extended:
        tokenizer.add_tokens(names)
    ids = tokenizer.convert_tokens_to_ids(names)
    for name, i in zip(names, ids):
        if tokenizer.encode(name, add_special_tokens=False) != [i]:
            raise DomainFileError(f"{where}: token {name!r} does not encode back to itself with this tokenizer")
    if max(ids) >= weight.shape[0]:
        text_encoder.resize_token_embeddings(max(ids) + 1, mean_resizing=False)
    with torch.no_grad():
        w = text_encoder.get_input_embeddings().weight
        w[ids] = embeds.to(dtype=w.dtype, device=w.device)
    return extended


def load_domain_multi(pipe, path: Path) -> tuple[str, dict]:
    """Load a multi-encoder domain file into every text encoder of ``pipe`` (SDXL, SD3, FLUX); returns
    ``(token, metadata)``. A key for an encoder the pipeline lacks (SD3's T5 with ``text_encoder_3=None``) is
    skipped; an encoder of the pipeline missing from the file is a DomainFileError."""
    from .encoder_slots import model_family, text_encoder_slots

    token, embeds, meta = read_domain_embeddings(path)
    family = model_family(pipe)
    learned_for = meta.get("lsb_family")
    if learned_for and learned_for != family:
        raise DomainFileError(f"{path}: learned for a {learned_for} model, this is a {family} model")
    sigs = json.loads(meta["lsb_text_encoders"]) if meta.get("lsb_text_encoders") else {}
    extended: set[int] = set()  # tokenizers extended in this call (one tokenizer may serve two encoders)
    for slot in text_encoder_slots(pipe, family):
        if slot.key not in embeds:
            raise DomainFileError(
                f"{path}: no embedding for this model's {slot.key} encoder "
                f"({slot.text_encoder_attr}); the file holds {sorted(embeds)}"
            )
        te = getattr(pipe, slot.text_encoder_attr)
        if slot.key in sigs and sigs[slot.key] != text_encoder_signature(te):
            raise DomainFileError(
                f"{path}: {slot.key} learned for text encoder {sigs[slot.key]}, this model has "
                f"{text_encoder_signature(te)}"
            )
        tok = getattr(pipe, slot.tokenizer_attr)
        if insert_token_embeddings(tok, te, token, embeds[slot.key], f"{path} [{slot.key}]", id(tok) in extended):
            extended.add(id(tok))
    return token, meta


def load_domain(pipe, spec: str) -> str:
    """Turn a ``--source``/``--target`` argument into a prompt for ``pipe``.

    Text is returned unchanged. A learned-domain file is loaded into the pipeline's tokenizer and
    text encoder (once) and the prompt is its template with the token filled in.
    """
    path = domain_file(spec)
    if path is None:
        return str(spec)
    if getattr(pipe, "transformer", None) is not None or getattr(pipe, "text_encoder_2", None) is not None:
        token, meta = load_domain_multi(pipe, path)  # SDXL / SD3 / FLUX: one embedding per text encoder
        template = meta.get("lsb_prompt", "{}")
        return template.format(token) if "{}" in template else f"{template} {token}"
    token, emb, meta = read_domain(path)
    dim = pipe.text_encoder.get_input_embeddings().weight.shape[-1]
    if emb.shape[-1] != dim:
        raise DomainFileError(
            f"{path}: learned for a text encoder with {emb.shape[-1]}-d embeddings, "
            f"but this model's has {dim}: learn the domain on this model"
        )
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
