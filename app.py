"""The LSB translation demo (Gradio): ``python app.py``, or ``lsb demo``.

The model is ``$LSB_DEMO_MODEL`` (a diffusers Stable Diffusion folder, an ``lsb export`` folder or a Hub id) or
the embedded mini SD; learned domains offered by name come from ``$LSB_DEMO_DOMAINS``; limits from
``$LSB_DEMO_MAX_PIXELS`` / ``$LSB_DEMO_TIME_LIMIT``. Gradio analytics are off unless
``GRADIO_ANALYTICS_ENABLED=True``.
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported

from lsb.surfaces.demo import build_demo, launch_demo  # noqa: E402

demo = build_demo()

if __name__ == "__main__":
    launch_demo(demo)
