"""``lsb translate --mask FILE_OR_FOLDER``: the user's masks read, paired with the inputs and checked before any model
is loaded (issue 23). The masking itself is :mod:`lsb.helpers.masks` (white = may change, black = keep).

* a file: one mask for every input;
* a folder: one mask per input, matched by file name without extension (``photo.jpg`` <- ``masks/photo.png``);
  inputs without a mask and masks without an input are one error naming them.

A mask is read as 8-bit grey ("L"; colour pictures are converted). A mask of its input's original size follows the
input through the size policy (resized with it, nearest neighbour); a mask of another size is resized to the image
with one note, or refused under ``--size-policy exact``. An all-black mask gets one note: that input is written
unchanged. With ``--resize-back`` the kept pixels are the input file's own, at its own size.
"""

from __future__ import annotations

import sys
from pathlib import Path


def _load_mask(path: Path):
    from PIL import Image, UnidentifiedImageError

    from ..io.images import ImageInputError

    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("L")
    except UnidentifiedImageError:
        raise ImageInputError(f"mask {path}: not a picture (PIL cannot read it)") from None
    except (OSError, SyntaxError) as e:
        raise ImageInputError(f"mask {path}: unreadable picture ({e})") from None


def pair_masks(mask_arg, files) -> list[Path]:
    """The mask file of each input (a file: the same for all; a folder: matched by name), or an
    :class:`lsb.io.images.ImageInputError` naming the unmatched files."""
    from ..io.images import IMAGE_SUFFIXES, ImageInputError

    p = Path(mask_arg).expanduser()
    if not p.exists():
        raise ImageInputError(f"--mask {mask_arg}: no such file or folder")
    if p.is_file():
        return [p] * len(files)
    masks = {q.stem: q for q in sorted(p.iterdir()) if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES}
    stems = {Path(f).stem for f in files}
    no_mask = [str(f) for f in files if Path(f).stem not in masks]
    no_input = [str(q) for s, q in masks.items() if s not in stems]
    if no_mask or no_input:
        parts = ([f"no mask for {', '.join(no_mask)}"] if no_mask else []) + (
            [f"no input for {', '.join(no_input)}"] if no_input else []
        )
        raise ImageInputError(f"--mask {mask_arg}: masks and inputs do not pair up by name: {'; '.join(parts)}")
    return [masks[Path(f).stem] for f in files]


def load_masks(mask_arg, files, images, policy: str = "resize") -> list:
    """One "L" mask per loaded input ``images[k]`` (PIL, after the size policy), sized like it."""
    from PIL import Image

    from ..io.images import ImageInputError

    paths = pair_masks(mask_arg, files)
    cache: dict = {}
    noted: set = set()  # one note per mask file and size
    masks = []
    for f, path, im in zip(files, paths, images):
        if path not in cache:
            cache[path] = _load_mask(path)
        mask = cache[path]
        original = tuple(im.info.get("resized_from", im.size))
        if mask.size != im.size:
            if mask.size != original:
                if policy == "exact":
                    raise ImageInputError(
                        f"mask {path}: size {mask.size[0]}x{mask.size[1]}, but its image {f} is "
                        f"{original[0]}x{original[1]} and --size-policy exact asks for equal sizes"
                    )
                if (path, im.size) not in noted:
                    noted.add((path, im.size))
                    print(
                        f"{path}: mask resized from {mask.size[0]}x{mask.size[1]} to its image's "
                        f"{im.size[0]}x{im.size[1]} ({f})",
                        file=sys.stderr,
                    )
            mask = mask.resize(im.size, Image.NEAREST)
        if mask.getextrema()[1] == 0 and ("empty", path, f) not in noted:
            noted.add(("empty", path, f))
            print(f"{path}: mask is all black (nothing may change): {f} is written unchanged", file=sys.stderr)
        masks.append(mask)
    return masks


def keep_input_pixels(output, path, mask, convert: bool = False):
    """``output`` (already resized back to its input's original size, ``--resize-back``) with the ORIGINAL input's
    pixels wherever ``mask`` (at the model's size) is black: the kept pixels are the input file's own, not a resize
    round trip."""
    from PIL import Image

    from ..io.images import load_image

    original = load_image(path, convert=convert)
    if original.size != output.size:
        return output
    may_change = mask.resize(original.size, Image.NEAREST).point(lambda v: 255 if v > 0 else 0)
    return Image.composite(output.convert("RGB"), original, may_change)


__all__ = ["keep_input_pixels", "load_masks", "pair_masks"]
