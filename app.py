"""The LSB translation demo (Gradio): ``python app.py``, or ``lsb demo``.

The model is ``$LSB_DEMO_MODEL`` (a diffusers Stable Diffusion folder or Hub id) or the embedded mini SD.
"""

from lsb.surfaces.demo import build_demo, launch_demo

demo = build_demo()

if __name__ == "__main__":
    launch_demo(demo)
