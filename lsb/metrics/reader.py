"""Read a shapes-world picture back into its scene attributes, with no learned parts (WORLD.md).

The reader measures a picture the way WORLD.md prescribes:

1. **background**: the per-channel median of the 3-pixel border, snapped to the nearest named
   background;
2. **object**: the largest 4-connected region whose RGB distance to the background exceeds 60;
3. **colour**: the median of the region's eroded interior (the un-eroded region when erosion leaves
   nothing), snapped to the nearest named colour;
4. **shape**: the ideal mask (filled box, inscribed disc/ellipse, upward triangle spanning the box)
   fitted to the object that has the best IoU with the object's coverage. Each ideal shape is
   fitted twice and keeps its better IoU: to the measured sub-pixel bounding box, and by moments
   (the ideal shape with the object's area and centroid, whose bbox blur and JPEG do not shrink the
   way they eat a triangle's thin corners out of the measured box). The IoU is soft (sum of minima
   over sum of maxima) on coverages contrast-stretched about 0.5, i.e. a soft comparison of the
   0.5 level sets: exact sub-pixel agreement on clean renders, tolerant of blurred edges;
5. **centre and size**: the bounding box of the chosen ideal shape fitted by moments, i.e. a
   sub-pixel estimate of the bbox centre and width (for the triangle the bbox centre is the scene
   centre, as in :func:`lsb.data.shapes.object_mask`; its centroid lies h/6 below it).

Coverage ("alpha") is the projection of each pixel onto the background -> object colour line, so
anti-aliased edges count fractionally; that makes centre and size exact to a small fraction of a
pixel on clean renders and keeps them unbiased under noise and blur (both preserve area and
centroid), where a thresholded bounding box would drift. The measured bounding box is reported as
``Reading.bbox``.

``read_scene`` takes a PIL RGB image, a uint8 (H, W, 3) array, or a float array/tensor in [0, 1]
shaped (3, H, W) or (H, W, 3). ``Reading.clean`` says whether the picture is a valid scene of the
world (one significant object region clear of the border, named colour and background, a
recognisable shape of plausible size and proportions); ``reason`` says why not.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from lsb.data.shapes import BACKGROUNDS, COLOURS, IMAGE_SIZE, MAX_SIZE, MIN_SIZE, SHAPES, Scene

BORDER = 3  # px of border used for the background estimate
OBJECT_THRESHOLD = 60.0  # RGB distance to the background above which a pixel is "object"
COLOUR_TOL = 40.0  # max RGB distance to a named colour for a clean reading (closest pair: 71)
BACKGROUND_TOL = 40.0  # max RGB distance to a named background for a clean reading
IOU_TOL = 0.8  # min IoU of the best ideal shape for a clean reading (square vs disc: 0.785)
SIZE_TOL = 0.15  # relative tolerance on the world's size range [20, 36] px
MIN_REGION = 12  # px (at 64 x 64): smaller regions are specks, not objects
ERODE = 2  # px of erosion for the colour estimate
WINDOW = 4  # px of dilation around the object over which coverage is integrated
SUPERSAMPLE = 4  # subpixels per pixel side for ideal masks
STRETCH = 3.0  # contrast stretch of coverage about 0.5 before the shape IoU
ASPECT_TOL = 0.25  # max relative deviation of the bbox aspect from the shape's for a clean reading

_SQRT3 = math.sqrt(3.0)
_BG_NAMES = tuple(BACKGROUNDS)
_BG_VALUES = np.asarray([BACKGROUNDS[k] for k in _BG_NAMES], dtype=np.float64)
_COLOUR_NAMES = tuple(COLOURS)
_COLOUR_VALUES = np.asarray([COLOURS[k] for k in _COLOUR_NAMES], dtype=np.float64)
_SQUARE3 = np.ones((3, 3), dtype=bool)


@dataclasses.dataclass
class Reading:
    """What the reader saw in one picture.

    ``shape`` and ``colour`` are None when no object was found (then ``cx``, ``cy`` and ``size`` are
    NaN). Distances are Euclidean in 0..255 RGB units to the snapped named value. ``ious`` holds
    each ideal shape's IoU with the object, ``shape_iou`` the best and ``shape_margin`` its lead over
    the second best. ``bbox`` is the measured sub-pixel (x0, y0, x1, y1), ``area`` the object's coverage
    in px, ``n_regions`` the number of significant object regions.
    """

    shape: str | None
    colour: str | None
    background: str
    cx: float
    cy: float
    size: float
    shape_iou: float
    shape_margin: float
    colour_distance: float
    background_distance: float
    clean: bool
    reason: str = ""
    bbox: tuple[float, float, float, float] | None = None
    area: float = 0.0
    n_regions: int = 0
    ious: dict = dataclasses.field(default_factory=dict)

    @property
    def centre(self) -> tuple[float, float]:
        return (self.cx, self.cy)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------------------------
# input conversion


def _to_rgb255(image) -> np.ndarray:
    """Any supported picture as a float64 (H, W, 3) array in 0..255."""
    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            raise ValueError(f"read_scene: expected an RGB image, got mode {image.mode!r}")
        return np.asarray(image, dtype=np.float64)
    if type(image).__module__.startswith("torch"):
        image = image.detach().cpu()
        if image.is_floating_point():
            image = image.double()
        image = image.numpy()
    if not isinstance(image, np.ndarray):
        raise TypeError(f"read_scene: expected a PIL image, numpy array or torch tensor, got {type(image).__name__}")
    arr = image
    if arr.ndim != 3:
        raise ValueError(f"read_scene: expected a (H, W, 3) or (3, H, W) picture, got shape {arr.shape}")
    if arr.shape[-1] != 3:
        if arr.shape[0] == 3:
            arr = np.moveaxis(arr, 0, -1)
        else:
            raise ValueError(f"read_scene: expected 3 channels first or last, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float64)
    if np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
        if not np.isfinite(arr).all():
            raise ValueError("read_scene: the picture contains NaN or inf")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -0.02 or hi > 1.02:
            raise ValueError(
                f"read_scene: float pictures must lie in [0, 1], got [{lo:.3g}, {hi:.3g}]"
                " (map [-1, 1] outputs with (x + 1) / 2)"
            )
        return np.clip(arr, 0.0, 1.0) * 255.0
    raise ValueError(f"read_scene: unsupported dtype {arr.dtype}; use uint8 0..255 or float 0..1")


# ----------------------------------------------------------------------------------------------
# ideal masks and fitting


def _ideal_coverage(shape: str, box: Sequence[float], x_lo: int, y_lo: int, w: int, h: int) -> np.ndarray:
    """Coverage in [0, 1] of the ideal ``shape`` fitted to ``box`` = (x0, y0, x1, y1) on pixels
    [y_lo, y_lo + h) x [x_lo, x_lo + w), box-filtered over SUPERSAMPLE^2 subpixels."""
    x0, y0, x1, y1 = box
    ss = SUPERSAMPLE
    xs = x_lo + (np.arange(w * ss) + 0.5) / ss
    ys = y_lo + (np.arange(h * ss) + 0.5) / ss
    bw, bh = max(x1 - x0, 1e-6), max(y1 - y0, 1e-6)
    cx = (x0 + x1) / 2
    if shape == "square":
        inside = ((ys >= y0) & (ys <= y1))[:, None] & ((xs >= x0) & (xs <= x1))[None, :]
    elif shape == "circle":
        u = ((xs - cx) / (bw / 2)) ** 2
        v = ((ys - (y0 + y1) / 2) / (bh / 2)) ** 2
        inside = v[:, None] + u[None, :] <= 1.0
    elif shape == "triangle":
        frac = (ys - y0) / bh  # 0 at the apex, 1 at the base
        half = np.where((frac >= 0) & (frac <= 1), frac * bw / 2, -1.0)
        inside = np.abs(xs - cx)[None, :] <= half[:, None]
    else:
        raise ValueError(f"unknown shape {shape!r}; the shapes world has {', '.join(SHAPES)}")
    return inside.reshape(h, ss, w, ss).mean(axis=(1, 3))


def _shape_box(shape: str, cx: float, cy: float, size: float) -> tuple[float, float, float, float]:
    """Bounding box (x0, y0, x1, y1) of the ideal ``shape`` of side/diameter ``size`` centred at (cx, cy)."""
    hh = size * _SQRT3 / 4 if shape == "triangle" else size / 2
    return cx - size / 2, cy - hh, cx + size / 2, cy + hh


def _stretch(cover: np.ndarray) -> np.ndarray:
    """Coverage with its contrast stretched by STRETCH about 0.5 (a soft 0.5 level set)."""
    if STRETCH == 1:
        return cover
    return np.clip((cover - 0.5) * STRETCH + 0.5, 0.0, 1.0)


def _soft_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.maximum(a, b).sum()
    return float(np.minimum(a, b).sum() / union) if union > 0 else 0.0


def _edges(profile: np.ndarray) -> tuple[float, float]:
    """Sub-pixel extent of a coverage profile (max coverage per column or row).

    With i0/i1 the first/last index where the profile reaches 0.5, the edges are
    ``i0 + 1 - p[i0] - p[i0-1]`` and ``i1 + p[i1] + p[i1+1]``: exact for a straight edge however it
    falls between pixels, and the partial pixels on either side of the 0.5 crossing both count.
    """
    idx = np.flatnonzero(profile >= 0.5)
    if idx.size == 0:
        idx = np.array([int(np.argmax(profile))])
    i0, i1 = int(idx[0]), int(idx[-1])
    before = profile[i0 - 1] if i0 > 0 else 0.0
    after = profile[i1 + 1] if i1 + 1 < profile.size else 0.0
    return float(i0 + 1 - profile[i0] - before), float(i1 + profile[i1] + after)


def _fit_by_moments(shape: str, area: float, mx: float, my: float) -> tuple[float, float, float]:
    """(cx, cy, size) of the ideal ``shape`` with the given area and centroid."""
    area = max(area, 0.0)
    if shape == "circle":
        return mx, my, 2.0 * math.sqrt(area / math.pi)
    if shape == "square":
        return mx, my, math.sqrt(area)
    side = math.sqrt(4.0 * area / _SQRT3)  # triangle: area = sqrt(3)/4 s^2
    # the centroid lies 2/3 of the height below the apex, i.e. h/6 below the bbox centre
    return mx, my - side * _SQRT3 / 2 / 6, side


def _nearest(value: np.ndarray, names: tuple[str, ...], table: np.ndarray) -> tuple[str, float]:
    d = np.linalg.norm(table - value[None, :], axis=1)
    i = int(np.argmin(d))
    return names[i], float(d[i])


# ----------------------------------------------------------------------------------------------
# the reader


def _background(img: np.ndarray) -> tuple[np.ndarray, str, float]:
    """Step 1: the background colour (median of the border), snapped to the world's: (RGB, name, distance)."""
    h, w, _ = img.shape
    border = np.ones((h, w), dtype=bool)
    border[BORDER:-BORDER, BORDER:-BORDER] = False
    bg = np.median(img[border], axis=0)
    return (bg, *_nearest(bg, _BG_NAMES, _BG_VALUES))


def _object_regions(img: np.ndarray, bg: np.ndarray, scale: float):
    """Step 2: the 4-connected regions far from the background: (labels, main label, main region, labels of the
    significant regions, their count), or None when no pixel is far from the background."""
    far = np.linalg.norm(img - bg, axis=2) > OBJECT_THRESHOLD
    labels, n = ndimage.label(far)  # default structure = 4-connectivity
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    main = int(np.argmax(sizes)) + 1
    region = labels == main
    significant = np.flatnonzero(sizes >= MIN_REGION * scale * scale) + 1
    n_regions = int(significant.size) if sizes[main - 1] >= MIN_REGION * scale * scale else 0
    return labels, main, region, significant, n_regions


def _object_colour(img: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, str, float]:
    """Step 3: the object colour (median of the eroded interior), snapped: (RGB, name, distance)."""
    interior = region
    for it in range(ERODE, 0, -1):
        eroded = ndimage.binary_erosion(region, structure=_SQUARE3, iterations=it)
        if eroded.any():
            interior = eroded
            break
    fg = np.median(img[interior], axis=0)
    return (fg, *_nearest(fg, _COLOUR_NAMES, _COLOUR_VALUES))


def _coverage(img, bg, d, dd, labels, main, region, significant) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, window): each pixel's position on the background -> object colour segment ``d`` (``dd = d.d``), kept
    in a window around the main region that excludes the other significant regions."""
    alpha = ((img - bg) @ d) / dd
    window = ndimage.binary_dilation(region, structure=_SQUARE3, iterations=WINDOW)
    others = np.isin(labels, significant[significant != main])
    if others.any():
        window &= ~ndimage.binary_dilation(others, structure=_SQUARE3, iterations=2)
    window |= region
    return np.where(window, alpha, 0.0), window


def _fit_shapes(alpha, cover, window, region, box):
    """Step 4: the best IoU of an ideal mask fitted to the object, per shape. Each shape is fitted twice, to the
    measured bounding box and by moments (area and centroid, which blur and noise preserve, where the thin corners
    of a blurred triangle fall out of the measured box); the better fit counts.

    Returns ``(ious, fits, area, moments_ok)``: fits are (cx, cy, size) per shape."""
    h, w = alpha.shape
    x0, y0, x1, y1 = box
    rows, cols = np.flatnonzero(window.any(axis=1)), np.flatnonzero(window.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = _stretch(cover[r0:r1, c0:c1])
    area = float(alpha.sum())
    # moments are meaningful when the coverage is object-like (a clean render has area >= region
    # pixels); on a mess of colours the signed coverage can cancel out, then use the measured box
    moments_ok = area >= 0.5 * float(region.sum())
    if moments_ok:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
        mx, my = float((alpha * xx).sum() / area), float((alpha * yy).sum() / area)
    else:
        mx, my = (x0 + x1) / 2, (y0 + y1) / 2
    ious, fits = {}, {}
    for s in SHAPES:
        fits[s] = _fit_by_moments(s, area, mx, my) if moments_ok else ((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0)
        best = -1.0
        for b in (box, _shape_box(s, *fits[s])) if moments_ok else (box,):
            best = max(best, _soft_iou(crop, _stretch(_ideal_coverage(s, b, c0, r0, c1 - c0, r1 - r0))))
        ious[s] = best
    return ious, fits, area, moments_ok


def _unclean_reasons(r: Reading, region: np.ndarray, fg, bg, moments_ok: bool, scale: float) -> list[str]:
    """Why a reading is not clean (empty: clean)."""
    x0, y0, x1, y1 = r.bbox
    reasons = []
    if not moments_ok:
        reasons.append(f"coverage {r.area:.0f} px is inconsistent with the object region ({int(region.sum())} px)")
    if r.n_regions != 1:
        reasons.append(f"{r.n_regions} significant object regions (expected 1)")
    if r.colour_distance > COLOUR_TOL:
        reasons.append(f"object colour {np.round(fg).astype(int).tolist()} is {r.colour_distance:.0f} from {r.colour}")
    if r.background_distance > BACKGROUND_TOL:
        reasons.append(
            f"background {np.round(bg).astype(int).tolist()} is {r.background_distance:.0f} from {r.background}"
        )
    if r.shape_iou < IOU_TOL:
        reasons.append(f"no clear shape (best IoU {r.shape_iou:.2f} for {r.shape})")
    lo, hi = MIN_SIZE * scale * (1 - SIZE_TOL), MAX_SIZE * scale * (1 + SIZE_TOL)
    if not lo <= r.size <= hi:
        reasons.append(f"size {r.size:.1f} px outside [{lo:.1f}, {hi:.1f}]")
    aspect = (y1 - y0) / max(x1 - x0, 1e-6) / (_SQRT3 / 2 if r.shape == "triangle" else 1.0)
    if abs(aspect - 1.0) > ASPECT_TOL:
        reasons.append(f"bounding box {aspect:.2f} times as tall as a {r.shape}'s")
    if region[0].any() or region[-1].any() or region[:, 0].any() or region[:, -1].any():
        reasons.append("object touches the image border")
    return reasons


def read_scene(image) -> Reading:
    """Read one picture back into its scene attributes (see the module docstring)."""
    img = _to_rgb255(image)
    h, w, _ = img.shape
    if min(h, w) < 4 * BORDER:
        raise ValueError(f"read_scene: picture {w}x{h} is too small (needs at least {4 * BORDER} px a side)")
    scale = min(h, w) / IMAGE_SIZE  # the world's sizes are in 64 x 64 pixels
    bg, background, bg_dist = _background(img)  # 1.

    def empty(reason: str, n_regions: int = 0) -> Reading:
        nan = float("nan")
        return Reading(
            None, None, background, nan, nan, nan, 0.0, 0.0, nan, bg_dist, False, reason, None, 0.0, n_regions, {}
        )

    regions = _object_regions(img, bg, scale)  # 2.
    if regions is None:
        return empty(f"no object: no pixel differs from the background by more than {OBJECT_THRESHOLD:g}")
    labels, main, region, significant, n_regions = regions
    fg, colour, colour_dist = _object_colour(img, region)  # 3.
    d = fg - bg
    dd = float(d @ d)
    if dd < 1.0:
        return empty("object colour equals the background colour", n_regions)
    alpha, window = _coverage(img, bg, d, dd, labels, main, region, significant)
    cover = np.clip(alpha, 0.0, 1.0)
    # measured sub-pixel bounding box from the coverage profiles
    x0, x1 = _edges(cover.max(axis=0))
    y0, y1 = _edges(cover.max(axis=1))
    box = (x0, y0, x1, y1)
    ious, fits, area, moments_ok = _fit_shapes(alpha, cover, window, region, box)  # 4.
    ranked = sorted(ious, key=ious.get, reverse=True)
    shape = ranked[0]
    # 5. centre and size: the chosen ideal shape matched to the coverage's area and centroid
    cx, cy, size = (float(v) for v in fits[shape])
    reading = Reading(
        shape=shape,
        colour=colour,
        background=background,
        cx=cx,
        cy=cy,
        size=size,
        shape_iou=ious[ranked[0]],
        shape_margin=ious[ranked[0]] - ious[ranked[1]],
        colour_distance=colour_dist,
        background_distance=bg_dist,
        clean=False,
        reason="",
        bbox=tuple(float(v) for v in box),
        area=area,
        n_regions=n_regions,
        ious=ious,
    )
    reasons = _unclean_reasons(reading, region, fg, bg, moments_ok, scale)
    return dataclasses.replace(reading, clean=not reasons, reason="; ".join(reasons))


def read_batch(images) -> list[Reading]:
    """Read many pictures: an iterable of pictures, or a 4-D array/tensor (N, 3, H, W) or (N, H, W, 3)."""
    if type(images).__module__.startswith("torch") or isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise ValueError(
                f"read_batch: expected a 4-D batch (N, 3, H, W) or (N, H, W, 3), got shape {tuple(images.shape)}"
            )
    return [read_scene(im) for im in images]


# ----------------------------------------------------------------------------------------------
# comparisons with ground truth


def centre_error(reading: Reading, scene: Scene) -> float:
    """Euclidean distance in px between the read and the true centre (inf when nothing was read)."""
    if reading.shape is None or not math.isfinite(reading.cx):
        return float("inf")
    return math.hypot(reading.cx - scene.cx, reading.cy - scene.cy)


def matches(
    reading: Reading,
    scene: Scene,
    attrs: Iterable[str] = ("shape", "colour", "background"),
    centre_tol: float | None = 6.0,
) -> bool:
    """Whether ``reading`` agrees with ``scene`` on ``attrs`` and (unless None) its centre within ``centre_tol`` px."""
    for a in attrs:
        if a not in ("shape", "colour", "background"):
            raise ValueError(f"matches: unknown attribute {a!r}; use shape, colour, background")
        if getattr(reading, a) != getattr(scene, a):
            return False
    return centre_tol is None or centre_error(reading, scene) <= centre_tol


def attribute_accuracy(readings: Sequence[Reading], scenes: Sequence[Scene]) -> dict:
    """Per-attribute accuracy of ``readings`` against the true ``scenes``.

    Returns ``shape``, ``colour``, ``background``, ``all`` (all three right) as fractions,
    ``centre_error`` (mean px) and ``size_ratio`` (mean read / true size) over the pictures where an
    object was found, plus ``clean`` (fraction of clean readings), ``found`` and ``n``.
    """
    if len(readings) != len(scenes):
        raise ValueError(f"attribute_accuracy: {len(readings)} readings for {len(scenes)} scenes")
    if not readings:
        raise ValueError("attribute_accuracy: no readings")
    n = len(readings)
    out = {
        a: sum(getattr(r, a) == getattr(s, a) for r, s in zip(readings, scenes)) / n
        for a in ("shape", "colour", "background")
    }
    out["all"] = sum(matches(r, s, centre_tol=None) for r, s in zip(readings, scenes)) / n
    found = [(r, s) for r, s in zip(readings, scenes) if r.shape is not None and math.isfinite(r.cx)]
    out["centre_error"] = float(np.mean([centre_error(r, s) for r, s in found])) if found else float("nan")
    out["size_ratio"] = float(np.mean([r.size / s.size for r, s in found])) if found else float("nan")
    out["clean"] = sum(r.clean for r in readings) / n
    out["found"] = len(found) / n
    out["n"] = n
    return out


def translation_success(reading: Reading, source_scene: Scene, target_shape: str, centre_tol: float = 6.0) -> bool:
    """Whether a shape translation of ``source_scene`` to ``target_shape`` succeeded.

    The output must read clean, as ``target_shape``, with the source's colour and background, and
    its centre within ``centre_tol`` px of the source centre.
    """
    if target_shape not in SHAPES:
        raise ValueError(f"unknown target shape {target_shape!r}; the shapes world has {', '.join(SHAPES)}")
    return (
        reading.clean
        and reading.shape == target_shape
        and reading.colour == source_scene.colour
        and reading.background == source_scene.background
        and centre_error(reading, source_scene) <= centre_tol
    )
