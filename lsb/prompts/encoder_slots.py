"""Which text encoders a model family has, and the key each one's learned embedding is saved under.

The table lives in the family records (:mod:`lsb.families`: ``ModelFamily.encoder_slots``); these functions
answer it for a pipeline. A learned domain token lives in every text encoder of the model (textual inversion
per encoder), under the keys model users share embeddings under:

=======  ======================================================================================
family   encoders (key: tokenizer attribute, text-encoder attribute)
=======  ======================================================================================
sd       clip_l: tokenizer, text_encoder   (file format stays diffusers' ``{token: [n, dim]}``)
sdxl     clip_l: tokenizer, text_encoder;  clip_g: tokenizer_2, text_encoder_2
sd3      clip_l: tokenizer, text_encoder;  clip_g: tokenizer_2, text_encoder_2;
         t5xxl: tokenizer_3, text_encoder_3 (only when the pipeline has T5)
flux     clip_l: tokenizer, text_encoder;  t5xxl: tokenizer_2, text_encoder_2
=======  ======================================================================================
"""

from __future__ import annotations

from ..families import FAMILIES as _RECORDS
from ..families import EncoderSlot, family_of, get_family

FAMILIES = tuple(_RECORDS)


def model_family(pipe) -> str:
    """The family name ("sd", "sdxl", "sd3", "flux") of a pipeline (:func:`lsb.families.family_of`)."""
    return family_of(pipe).name


def text_encoder_slots(pipe, family: str | None = None) -> list[EncoderSlot]:
    """The encoders of ``pipe`` that a learned token lives in (SD3 without T5: the two CLIPs only)."""
    record = family_of(pipe) if family is None else get_family(family)
    return record.slots_of(pipe)


def family_slot_keys(family: str) -> tuple[str, ...]:
    """All keys a full file of ``family`` holds (SD3 files may lack t5xxl when learned without T5)."""
    return get_family(family).slot_keys()


__all__ = ["FAMILIES", "EncoderSlot", "model_family", "text_encoder_slots", "family_slot_keys"]
