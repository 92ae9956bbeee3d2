"""Reading the commands' input images under one size policy (issue 16 item 2), before any model is loaded.

:func:`load_inputs` checks each file's pixel count from its header (before decoding), loads it (8-bit RGB, or
converted with ``--convert-mode``), and applies :func:`lsb.io.images.fit_size`: resized to the model's native size
by default (one note per file), refused unless native with ``--size-policy exact``, kept with ``--size-policy
keep``; ``--size N`` resizes to N x N instead of the native size.
"""

from __future__ import annotations

import sys

#: lsb.io.images.SIZE_POLICIES, repeated so that building the parser imports no numpy / PIL
SIZE_POLICIES = ("resize", "exact", "keep")
SIZE_POLICY_HELP = (
    "how inputs of another size than the model's native one are handled: resize (default; one note "
    "per file), exact (refuse them) or keep (run at their own size, sides multiples of 8)"
)
MAX_PIXELS_HELP = "largest input (width x height, checked before decoding) and computation size (default 12000000)"


def header_size(path, name: str) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding the pixels."""
    from PIL import Image

    from ..io.images import ImageInputError

    try:
        with Image.open(path) as im:
            return im.size
    except Image.DecompressionBombError as e:
        raise ImageInputError(f"{name}: {e}") from None
    except Exception:  # noqa: BLE001 (load_image gives the precise message)
        return (0, 0)


def load_inputs(
    files,
    native: int | None,
    *,
    policy: str = "resize",
    size: int | None = None,
    convert: bool = False,
    max_pixels: int | None = None,
    notes=True,
    defer_size: bool = False,
) -> list:
    """Every input checked and loaded (a bad one raises, naming it, before anything runs). ``defer_size``: check
    files, modes and pixel counts only (the model's native size is not known yet: a Hub model before loading);
    call again with the native size once it is."""
    from PIL import Image

    from ..io.images import ImageInputError, check_pixels, fit_size, load_image
    from ..io.runs import shown

    if size is not None:
        native = size
    images = []
    for f in files:
        name = shown(f)
        check_pixels(header_size(f, name), name, max_pixels)
        try:
            im = load_image(f, convert=convert)
        except Image.DecompressionBombError as e:
            raise ImageInputError(f"{name}: {e}") from None
        if defer_size:
            images.append(im)
            continue
        im = fit_size(im, name, native, "resize" if size is not None else policy, max_pixels=max_pixels)
        if notes and "first_frame_of" in im.info:
            print(f"{shown(f)}: first of its {im.info['first_frame_of']} frames used (--convert-mode)", file=sys.stderr)
        if notes and "converted_from" in im.info:
            print(f"{shown(f)}: converted from mode {im.info['converted_from']} to RGB", file=sys.stderr)
        if notes and "resized_from" in im.info:
            w, h = im.info["resized_from"]
            why = "--size" if size is not None else "the model's native size; --size-policy keep runs it as it is"
            print(f"{shown(f)}: resized from {w}x{h} to {native}x{native} ({why})", file=sys.stderr)
        images.append(im)
    return images


def resize_back(out, source):
    """``out`` at the size its input had before :func:`load_inputs` resized it (unchanged otherwise)."""
    from PIL import Image

    size = source.info.get("resized_from")
    return out.resize(tuple(size), Image.BICUBIC) if size and tuple(size) != out.size else out
