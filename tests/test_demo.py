"""The Gradio demo (lsb.surfaces.demo / app.py) on a tiny random SD: API calls through gradio_client, and a real browser.

The browser test drives Debian's /usr/bin/chromium with Playwright (never a downloaded browser); it is
skipped only when that executable is missing.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

from tests.conftest import tiny_components  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "images" / "circles" / "circle-0.png"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
RES = 64  # the tiny SD's resolution: unet sample_size 8 x VAE factor 8


def _args(image, source="a circle", target="a square", method="lsb", nfe=3, tau=5.29, t0=0.2, guidance=3.0,
          seed=0, resize=True, source_file=None, target_file=None):
    """The /translate endpoint's inputs, in order."""
    return [image, source, source_file, target, target_file, method, nfe, tau, t0, guidance, seed, resize]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Two intra-op threads on a loaded 2-core machine make each tiny UNet call take seconds instead of 0.1 s.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from diffusers import StableDiffusionPipeline

    path = tmp_path_factory.mktemp("demo") / "tiny-sd"
    StableDiffusionPipeline(**tiny_components(), safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def server(tiny_model):
    from lsb.surfaces.demo import build_demo, launch_demo

    demo = build_demo(tiny_model)
    _, url, _ = launch_demo(demo, server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    try:
        yield url
    finally:
        demo.close()


@pytest.fixture(scope="module")
def client(server):
    return gradio_client.Client(server, verbose=False, analytics_enabled=False)


def test_translate_through_client(client, tmp_path):
    from gradio_client import handle_file

    from lsb.prompts.domains import write_domain

    assert "/translate" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    # The target as an uploaded learned domain (16-d: the tiny text encoder's width).
    domain = write_domain(tmp_path / "square" / "learned_embeds.safetensors", "<sq>", torch.randn(1, 16),
                          prompt="a {}")
    out, side, strip, status = client.predict(*_args(handle_file(str(EXAMPLE)), target_file=handle_file(str(domain))),
                                              api_name="/translate")
    with Image.open(out) as im:
        assert im.size == (RES, RES)
    with Image.open(side) as im:
        assert im.size == (2 * RES + 3 * 2, RES + 2 * 2)  # input | output, make_grid padding 2
    with Image.open(strip) as im:  # 3 steps x (x_t, source, target) plus labels
        assert im.width > 3 * RES and im.height > 3 * RES
    assert "3 UNet calls" in status and "a <sq>" in status


def test_user_errors_reach_the_client(client, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    image = handle_file(str(EXAMPLE))
    with pytest.raises(AppError, match=r"uses the token &lt;nope&gt;, which this pipeline's tokenizer does not know"):
        client.predict(*_args(image, target="a <nope>"), api_name="/translate")
    with pytest.raises(AppError, match="tau must be a positive number, got 0.0"):
        client.predict(*_args(image, tau=0), api_name="/translate")
    with pytest.raises(AppError, match="greater than maximum value 0.99"):  # Gradio's own slider check
        client.predict(*_args(image, t0=1.5), api_name="/translate")
    bad = tmp_path / "learned_embeds.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(AppError, match="the source domain file: not a readable safetensors file"):
        client.predict(*_args(image, source_file=handle_file(str(bad))), api_name="/translate")
    text = tmp_path / "note.txt"
    text.write_text("hello")
    with pytest.raises(AppError, match="the input image: not an image file"):
        client.predict(*_args(handle_file(str(text))), api_name="/translate")


def test_baselines_in_process(tiny_model, tmp_path):
    """demo(..., api_name="translate") without a server: SDEdit and DDIB; a non-multiple-of-8 RGBA input is
    converted and resized, with notes."""
    from lsb.surfaces.demo import build_demo

    odd = tmp_path / "odd.png"
    Image.open(EXAMPLE).resize((50, 45)).convert("RGBA").save(odd)
    demo = build_demo(tiny_model)
    for method in ("sdedit", "ddib"):
        out, side, strip, status = demo(*_args(str(odd), method=method, nfe=2, resize=False), api_name="translate")
        with Image.open(out) as im:
            assert im.size == (RES, RES)
        assert strip is None
        assert "2 UNet calls" in status and "50x45 is not a multiple of 8: resized to 64x64" in status
        assert "converted from mode RGBA to RGB" in status  # the demo converts what the CLI refuses, and says so


def test_demo_subcommand_registered():
    from lsb.surfaces.cli import build_parser

    args = build_parser().parse_args(["demo", "--model", "some/folder", "--port", "7861", "--share"])
    assert (args.model, args.port, args.share) == ("some/folder", 7861, True)


def test_browser_upload_and_translate(server, tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (Debian package chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(120_000)  # the page takes ~40 s to render on a loaded 2-core machine
            page.goto(server, wait_until="domcontentloaded")
            page.locator("#input-image input[type=file]").set_input_files(str(EXAMPLE))
            expect(page.locator("#input-image img").first).to_be_visible(timeout=60_000)
            page.locator("#translate-btn").click()
            expect(page.locator("#output-image img").first).to_be_visible(timeout=300_000)
            expect(page.locator("#status")).to_contain_text("UNet calls", timeout=60_000)
            natural_width = "img => img.decode().then(() => img.naturalWidth)"
            assert page.locator("#output-image img").first.evaluate(natural_width) == RES
            expect(page.locator("#trajectory img").first).to_be_visible()
            shot = tmp_path / "demo.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            if os.environ.get("LSB_DEMO_SCREENSHOT"):  # keep a copy to look at
                shutil.copy(shot, os.environ["LSB_DEMO_SCREENSHOT"])

            # A user error shows as an error toast with the message, angle brackets intact.
            page.locator("#target-text textarea").fill("a <nope>")
            page.locator("#translate-btn").click()
            expect(page.get_by_text(re.compile(r"uses the token <nope>")).first).to_be_visible(timeout=120_000)
            if os.environ.get("LSB_DEMO_SCREENSHOT"):
                page.wait_for_timeout(1500)  # the toast fades in
                page.screenshot(path=os.environ["LSB_DEMO_SCREENSHOT"].replace(".png", "-error.png"))
        finally:
            browser.close()
