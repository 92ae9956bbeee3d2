"""The shapes world (WORLD.md): one flat-coloured object on a uniform background, 64 x 64 RGB.

A :class:`Scene` is the full parametric description of a picture; :func:`render` draws it at 4x
resolution and box-downsamples (anti-aliasing). Because the world is parametric, the ideal output
of any attribute translation is ``render(scene.replace(shape=...))``.

Everything random takes a ``numpy.random.Generator`` or a seed, so datasets are reproducible.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
from PIL import Image

IMAGE_SIZE = 64
SUPERSAMPLE = 4
MIN_SIZE, MAX_SIZE = 20.0, 36.0
MARGIN = 4.0

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 40),
    "purple": (150, 60, 190),
    "orange": (245, 130, 30),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (240, 240, 240),
    "black": (25, 25, 25),
    "gray": (128, 128, 128),
}

# Named splits: every split is an independent stream of scenes. Benchmarks use "test" and tune on
# "val"; training uses "train". A split name maps to the first entropy word of the scene RNG.
SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}


class SceneError(ValueError):
    """A scene parameter outside the world's definition."""


def _check_choice(name: str, value: str, options: Sequence[str]) -> None:
    if value not in options:
        raise SceneError(f"unknown {name} {value!r}; the shapes world has {', '.join(options)}")


@dataclasses.dataclass(frozen=True)
class Scene:
    """One scene: ``shape`` of ``colour`` on ``background``, side/diameter ``size`` px, centre (cx, cy)."""

    shape: str
    colour: str
    background: str
    size: float
    cx: float
    cy: float

    def __post_init__(self) -> None:
        _check_choice("shape", self.shape, SHAPES)
        _check_choice("colour", self.colour, tuple(COLOURS))
        _check_choice("background", self.background, tuple(BACKGROUNDS))
        if not (MIN_SIZE <= self.size <= MAX_SIZE) or not math.isfinite(self.size):
            raise SceneError(f"size {self.size} outside [{MIN_SIZE:g}, {MAX_SIZE:g}] px")
        lo, hi = self.size / 2 + MARGIN, IMAGE_SIZE - self.size / 2 - MARGIN
        for name, v in (("cx", self.cx), ("cy", self.cy)):
            if not (lo - 1e-9 <= v <= hi + 1e-9) or not math.isfinite(v):
                raise SceneError(f"{name}={v} outside [{lo:g}, {hi:g}] px for size {self.size:g}")

    def replace(self, **changes) -> "Scene":
        """A copy with some attributes changed (the ideal output of a translation)."""
        return dataclasses.replace(self, **changes)

    @property
    def caption(self) -> str:
        return caption(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def sample_scene(rng: np.random.Generator, **fixed) -> Scene:
    """Draw a scene from the world's distribution; keyword arguments pin attributes (e.g. shape='circle').

    All fields are always drawn (in a fixed order) before pinned ones are applied, so pinning one
    attribute leaves the others of the same scene index unchanged.
    """
    unknown = set(fixed) - {f.name for f in dataclasses.fields(Scene)}
    if unknown:
        raise SceneError(f"unknown scene fields: {sorted(unknown)}")
    shape = SHAPES[rng.integers(len(SHAPES))]
    colour = tuple(COLOURS)[rng.integers(len(COLOURS))]
    background = tuple(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    size = float(fixed.get("size", rng.uniform(MIN_SIZE, MAX_SIZE)))
    u = rng.uniform(0.0, 1.0, size=2)  # centre as a fraction of the admissible range for this size
    lo, hi = size / 2 + MARGIN, IMAGE_SIZE - size / 2 - MARGIN
    fields = dict(
        shape=shape,
        colour=colour,
        background=background,
        size=size,
        cx=float(lo + u[0] * (hi - lo)),
        cy=float(lo + u[1] * (hi - lo)),
    )
    fields.update(fixed)
    return Scene(**fields)


def scene_rng(split: str | int, index: int) -> np.random.Generator:
    """The generator of scene ``index`` in ``split``: scenes are addressable without drawing the others."""
    if isinstance(split, str):
        if split not in SPLITS:
            raise SceneError(f"unknown split {split!r}; choose from {list(SPLITS)}")
        split = SPLITS[split]
    return np.random.default_rng([int(split), int(index)])


def scenes(split: str | int, n: int, start: int = 0, **fixed) -> list[Scene]:
    """``n`` reproducible scenes of a split (indices start..start+n-1), optionally with pinned attributes."""
    return [sample_scene(scene_rng(split, i), **dict(fixed)) for i in range(start, start + n)]


def object_mask(scene: Scene, supersample: int = SUPERSAMPLE) -> np.ndarray:
    """Coverage of the object in [0, 1] on the 64 x 64 grid (box filter over supersample^2 subpixels)."""
    n = IMAGE_SIZE * supersample
    c = (np.arange(n, dtype=np.float64) + 0.5) / supersample  # subpixel centres in 64-px units
    x, y = np.meshgrid(c, c, indexing="xy")
    dx, dy = x - scene.cx, y - scene.cy
    half = scene.size / 2
    if scene.shape == "circle":
        inside = dx * dx + dy * dy <= half * half
    elif scene.shape == "square":
        inside = (np.abs(dx) <= half) & (np.abs(dy) <= half)
    else:  # upward equilateral triangle, bounding box (s, s*sqrt(3)/2) centred at (cx, cy)
        h = scene.size * math.sqrt(3) / 2
        top = -h / 2
        frac = (dy - top) / h  # 0 at the apex, 1 at the base
        inside = (frac >= 0) & (frac <= 1) & (np.abs(dx) <= frac * half)
    cov = inside.astype(np.float64).reshape(IMAGE_SIZE, supersample, IMAGE_SIZE, supersample)
    return cov.mean(axis=(1, 3))


def render_array(scene: Scene) -> np.ndarray:
    """The scene as a uint8 array (64, 64, 3)."""
    alpha = object_mask(scene)[..., None]
    fg = np.asarray(COLOURS[scene.colour], dtype=np.float64)
    bg = np.asarray(BACKGROUNDS[scene.background], dtype=np.float64)
    img = alpha * fg + (1 - alpha) * bg
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render(scene: Scene) -> Image.Image:
    """The scene as a 64 x 64 RGB PIL image."""
    return Image.fromarray(render_array(scene), mode="RGB")


def caption(scene: Scene, colour: bool = True, background: bool = True) -> str:
    """``a {colour} {shape} on a {background} background``, optionally dropping colour/background."""
    words = ["a"]
    if colour:
        words.append(scene.colour)
    words.append(scene.shape)
    if background:
        words += ["on", "a", scene.background, "background"]
    return " ".join(words)


def caption_variants(scene: Scene) -> list[str]:
    """The four captions that describe a scene (full, no background, no colour, shape only)."""
    return [caption(scene, c, b) for c in (True, False) for b in (True, False)]


# Caption augmentation weights used in training: full captions most often (colour binding is the
# hardest attribute), shorter ones so that partial prompts work, and empty captions for CFG.
CAPTION_WEIGHTS = {"full": 0.55, "no_background": 0.15, "no_colour": 0.10, "shape_only": 0.10, "empty": 0.10}


def augmented_caption(scene: Scene, rng: np.random.Generator, weights: dict | None = None) -> str:
    """One training caption for ``scene``: a random variant from :data:`CAPTION_WEIGHTS` ('' = unconditional)."""
    w = weights or CAPTION_WEIGHTS
    kinds = list(w)
    p = np.asarray([w[k] for k in kinds], dtype=np.float64)
    kind = kinds[rng.choice(len(kinds), p=p / p.sum())]
    return {
        "full": lambda: caption(scene),
        "no_background": lambda: caption(scene, background=False),
        "no_colour": lambda: caption(scene, colour=False),
        "shape_only": lambda: caption(scene, colour=False, background=False),
        "empty": lambda: "",
    }[kind]()


def caption_vocabulary() -> list[str]:
    """Every word a caption of the world can contain."""
    return ["a", "on", "background", *SHAPES, *COLOURS, *BACKGROUNDS]
