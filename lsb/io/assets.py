"""Where the shipped assets live: the embedded models (diffusers folder layout) and helper nets."""

from pathlib import Path

#: the package's assets folder
ASSETS = Path(__file__).resolve().parents[1] / "assets"
#: The embedded mini Stable Diffusion (diffusers folder layout), trained on the shapes world.
MINI_SD = str(ASSETS / "mini-sd")
#: The embedded mini Stable Diffusion 3 (rectified flow; diffusers folder layout), trained on the shapes world.
MINI_SD3 = str(ASSETS / "mini-sd3")
