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
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RES = 64  # the tiny SD's resolution: unet sample_size 8 x VAE factor 8


#: The /translate endpoint's inputs in order: the positional API a gradio_client user calls (stated here on its own,
#: so that a reordering in lsb.surfaces.demo fails these tests), with the values the tests use unless they say.
TRANSLATE_INPUTS = {
    "image": None,
    "source": "a circle",
    "source_file": None,
    "target": "a square",
    "target_file": None,
    "method": "lsb",
    "nfe": 3,
    "tau": 5.29,
    "t0": 0.2,
    "guidance": 3.0,
    "seed": 0,
    "resize": True,
    "source_domain": "(none)",
    "target_domain": "(none)",
    "mask": None,
    "student": "(none)",
}


def _args(image, **values):
    """The /translate endpoint's inputs, in order."""
    unknown = set(values) - set(TRANSLATE_INPUTS)
    if unknown:
        raise TypeError(f"not an input of /translate: {sorted(unknown)}")
    return list({**TRANSLATE_INPUTS, "image": image, **values}.values())


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
    StableDiffusionPipeline(
        **tiny_components(), safety_checker=None, feature_extractor=None, requires_safety_checker=False
    ).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def domain_dir(tmp_path_factory):
    """The server's domain folder: one learned domain, ``square``, and a link leaving the folder (skipped)."""
    from lsb.prompts.domains import write_domain

    root = tmp_path_factory.mktemp("server-domains")
    torch.manual_seed(5)
    write_domain(root / "square" / "learned_embeds.safetensors", "<srv-sq>", torch.randn(1, 16), prompt="a {}")
    outside = write_domain(
        tmp_path_factory.mktemp("elsewhere") / "learned_embeds.safetensors", "<out>", torch.randn(1, 16)
    )
    (root / "escape.safetensors").symlink_to(outside)
    return root


@pytest.fixture(scope="module")
def server(tiny_model, domain_dir):
    from lsb.surfaces.demo import build_demo, launch_demo

    demo = build_demo(tiny_model, domains=str(domain_dir))
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
    domain = write_domain(tmp_path / "square" / "learned_embeds.safetensors", "<sq>", torch.randn(1, 16), prompt="a {}")
    out, side, strip, status = client.predict(
        *_args(handle_file(str(EXAMPLE)), target_file=handle_file(str(domain))), api_name="/translate"
    )
    with Image.open(out) as im:
        assert im.size == (RES, RES)
    with Image.open(side) as im:
        assert im.size == (2 * RES + 3 * 2, RES + 2 * 2)  # input | output, make_grid padding 2
    with Image.open(strip) as im:  # 3 steps x (x_t, source, target) plus labels
        assert im.width > 3 * RES and im.height > 3 * RES
    assert "3 network calls" in status and "a <sq>" in status


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


def test_server_paths_are_refused_identically(client, tiny_model):
    """A server path typed as a domain is never opened: an existing weights file (many tensors) and a missing one
    get the same one-line answer, without tensor names; a path as the server-domain choice is refused too."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    image = handle_file(str(EXAMPLE))
    existing = str(Path(tiny_model) / "text_encoder" / "model.safetensors")
    assert Path(existing).is_file()
    answers = []
    for path in (
        existing,
        existing.replace("model.safetensors", "nothere.safetensors"),
        tiny_model + "/unet",
        "../../etc/passwd",
    ):
        for role in ("source", "target"):
            with pytest.raises(AppError) as e:
                client.predict(*_args(image, **{role: path}), api_name="/translate")
            msg = str(e.value)
            assert "looks like a file path" in msg and "upload the file" in msg, msg
            assert "embeddings" not in msg and "weight" not in msg and path not in msg
            answers.append(msg.replace(role, "ROLE"))
    assert len(set(answers)) == 1, set(answers)
    with pytest.raises(AppError):  # not one of the dropdown's choices
        client.predict(*_args(image, target_domain=existing), api_name="/translate")


def test_server_path_as_domain_file_over_http(server, tiny_model):
    """A raw API call naming a server file (not an upload) as the domain file is refused the same way whether the
    file exists or not (Gradio refuses paths outside its upload folder; the demo checks again in process)."""
    import httpx

    base = server.rstrip("/") + "/gradio_api"
    with open(EXAMPLE, "rb") as f:
        image = httpx.post(base + "/upload", files={"files": f}).json()[0]

    def call(domain_path):
        fd = None if domain_path is None else {"path": domain_path, "meta": {"_type": "gradio.FileData"}}
        data = _args({"path": image, "meta": {"_type": "gradio.FileData"}}, nfe=2, source_file=fd)
        event = httpx.post(base + "/call/translate", json={"data": data}).json()["event_id"]
        return httpx.get(f"{base}/call/translate/{event}", timeout=120).text

    existing = str(Path(tiny_model) / "unet" / "diffusion_pytorch_model.safetensors")
    answers = {call(existing), call(existing.replace("diffusion_pytorch_model", "missing"))}
    assert len(answers) == 1 and "event: error" in answers.pop()
    assert "event: complete" in call(None)  # the same call without the server path works


def test_uploaded_file_errors_show_no_tensor_names(client, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError
    from safetensors.torch import save_file

    two = tmp_path / "learned_embeds.safetensors"
    save_file({"secret_a": torch.zeros(1, 16), "secret_b": torch.zeros(1, 16)}, str(two))
    with pytest.raises(AppError) as e:
        client.predict(*_args(handle_file(str(EXAMPLE)), source_file=handle_file(str(two))), api_name="/translate")
    msg = str(e.value)
    assert "the source domain file" in msg and "2 tensor(s)" in msg, msg
    assert "secret" not in msg and str(tmp_path) not in msg


def test_uploads_only_from_the_upload_folder(tiny_model, domain_dir):
    """In process, a domain "upload" that is a server path (existing or not) gets one refusal; the link that leaves
    the server's domain folder is not offered."""
    from lsb.prompts.domains import DomainFileError
    from lsb.surfaces.demo import Translator

    tr = Translator(tiny_model, domains=str(domain_dir))
    assert list(tr.domains) == ["square"]
    pipe = tr.pipeline("lsb")
    existing = Path(tiny_model) / "unet" / "diffusion_pytorch_model.safetensors"
    msgs = set()
    for path in (
        existing,
        existing.with_name("missing.safetensors"),
        domain_dir / "square" / "learned_embeds.safetensors",
    ):
        with pytest.raises(DomainFileError) as e:
            tr._domain_prompt(pipe, ("upload", str(path)), "source")
        msgs.add(str(e.value))
    assert msgs == {"the source domain file must be uploaded through the page"}
    with pytest.raises(DomainFileError, match="unknown server domain"):
        tr._domain_prompt(pipe, ("server", "escape"), "source")
    assert tr._domain_prompt(pipe, ("server", "square"), "target") == "a <srv-sq>"


def test_server_domain_and_pixel_limit_through_client(client, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    out, _, _, status = client.predict(
        *_args(handle_file(str(EXAMPLE)), nfe=2, target_domain="square"), api_name="/translate"
    )
    assert "2 network calls" in status and "a <srv-sq>" in status
    big = tmp_path / "big.png"
    Image.open(EXAMPLE).convert("RGB").resize((256, 256)).save(big)  # 65536 px > 4 x 64 x 64
    with pytest.raises(AppError, match=r"256x256 = 65536 pixels; with resizing off this demo takes up to 16384"):
        client.predict(*_args(handle_file(str(big)), resize=False), api_name="/translate")


def test_time_limit_stops_a_translation(tiny_model):
    from lsb.surfaces.demo import TranslationTimeout, Translator

    tr = Translator(tiny_model, time_limit=1e-9)
    with pytest.raises(TranslationTimeout, match=r"time limit of 1e-09 s \(after 0 of about 4 network calls\)"):
        tr(str(EXAMPLE), "a circle", "a square", nfe=4)
    assert not tr.pipeline("lsb").unet._forward_pre_hooks  # the hook is removed again
    tr.time_limit = 60.0
    *_, status = tr(str(EXAMPLE), "a circle", "a square", nfe=2, trajectory=False)
    assert "2 network calls" in status
    with pytest.raises(ValueError, match="time_limit must be a positive number"):
        Translator(tiny_model, time_limit=0)


def test_analytics_off_and_share_hint(tiny_model, monkeypatch, capsys):
    from lsb.surfaces.demo import SHARE_HINT, build_demo, launch_demo

    monkeypatch.delenv("GRADIO_ANALYTICS_ENABLED", raising=False)
    demo = build_demo(tiny_model)
    assert demo.analytics_enabled is False and os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "True")  # an explicit opt-in is respected
    assert build_demo(tiny_model).analytics_enabled is True
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    _, url, share_url = launch_demo(demo, server_name="127.0.0.1", prevent_thread_lock=True)
    try:
        out = capsys.readouterr().out
        assert f"Running on local URL: {url}" in out and SHARE_HINT in out and "`lsb demo --share`" in out
        assert "share=True" not in out and share_url is None
    finally:
        demo.close()


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
        assert "2 network calls" in status and "50x45 is not a multiple of 8: resized to 64x64" in status
        assert "converted from mode RGBA to RGB" in status  # the demo converts what the CLI refuses, and says so


def test_demo_subcommand_registered():
    from lsb.surfaces.cli import build_parser

    args = build_parser().parse_args(["demo", "--model", "some/folder", "--port", "7861", "--share"])
    assert (args.model, args.port, args.share) == ("some/folder", 7861, True)
    assert (args.domains, args.max_pixels, args.time_limit, args.trust_remote_code) == (None, None, None, None)
    args = build_parser().parse_args(["demo", "--domains", "d", "--max-pixels", "4096", "--time-limit", "30"])
    assert (args.domains, args.max_pixels, args.time_limit) == ("d", 4096, 30.0)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--time-limit", "nan"], "--time-limit must be a positive number"),
        (["--time-limit", "0"], "--time-limit must be a positive number"),
        (["--max-pixels", "10"], "--max-pixels must be at least 64"),
    ],
)
def test_demo_bad_options_are_one_line(argv, message, capsys):
    from lsb.surfaces.cli import main

    assert main(["demo", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lsb: error:") and message in err and "\n" not in err


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
            expect(page.locator("#status")).to_contain_text("network calls", timeout=60_000)
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


# ---- the demo on the embedded flow model (lsb.MINI_SD3): FlowEdit offered, the gallery shown, a real translation


@pytest.fixture(scope="module")
def flow_server():
    from lsb.surfaces.demo import build_demo, launch_demo

    demo = build_demo("mini-sd3")
    _, url, _ = launch_demo(demo, server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    try:
        yield demo, url
    finally:
        demo.close()


def test_flow_demo_offers_the_family_methods_and_translates(flow_server):
    demo, url = flow_server
    assert demo.translator.family.name == "sd3"
    assert demo.translator.methods == ("lsb", "flowedit", "sdedit")
    client = gradio_client.Client(url, verbose=False, analytics_enabled=False)
    from gradio_client import handle_file

    for method in ("flowedit", "lsb"):
        out, _, strip, status = client.predict(
            *_args(handle_file(str(EXAMPLE)), method=method, nfe=2, tau=0.35, t0=0.05), api_name="/translate"
        )
        with Image.open(out) as im:
            assert im.size == (64, 64)
        assert "2 network calls" in status and (strip is not None) == (method == "lsb")
    with pytest.raises(Exception, match="not in the list of choices"):  # the radio offers the family's only
        client.predict(*_args(handle_file(str(EXAMPLE)), method="ddib", nfe=2), api_name="/translate")


def test_demo_refuses_an_unsupported_model_before_serving(tmp_path):
    from lsb.surfaces.demo import build_demo

    bridge = ROOT / "lsb" / "assets" / "restoration" / "bridge-inpaint"
    with pytest.raises(ValueError, match="restoration bridge"):
        build_demo(str(bridge))


def test_demo_gallery_ships_inside_the_package():
    import lsb.surfaces.demo as d

    rows = d.example_rows()
    assert len(rows) >= 6 and all(Path(r[0]).is_file() for r in rows)
    assert all(Path(r[0]).resolve().is_relative_to(Path(d.__file__).resolve().parents[1]) for r in rows)


def test_browser_flow_model_flowedit_and_gallery(flow_server):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (Debian package chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    _, url = flow_server
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1200})
            page.set_default_timeout(120_000)
            page.goto(url, wait_until="domcontentloaded")
            expect(page.get_by_text("Examples (shapes-world scenes shipped with lsb)").first).to_be_visible(
                timeout=120_000
            )
            page.get_by_label("FlowEdit").check()
            page.locator("#input-image input[type=file]").set_input_files(str(EXAMPLE))
            expect(page.locator("#input-image img").first).to_be_visible(timeout=60_000)
            page.locator("#translate-btn").click()
            expect(page.locator("#status")).to_contain_text("FlowEdit", timeout=300_000)
            expect(page.locator("#output-image img").first).to_be_visible(timeout=60_000)
        finally:
            browser.close()


def test_translate_a_painted_region_through_client(client, tmp_path):
    """Issue 23: the mask painted in the image editor reaches the translation; unpainted pixels stay the input's."""
    import numpy as np
    from gradio_client import handle_file

    layer = np.zeros((RES, RES, 4), np.uint8)
    layer[:, : RES // 2] = (255, 0, 255, 255)
    Image.fromarray(layer, "RGBA").save(tmp_path / "layer.png")
    source = np.asarray(Image.open(EXAMPLE).convert("RGB").resize((RES, RES), Image.BICUBIC))
    Image.fromarray(source).save(tmp_path / "in.png")
    editor = {"background": handle_file(str(tmp_path / "in.png")), "layers": [handle_file(str(tmp_path / "layer.png"))]}
    out, side, _, status = client.predict(
        *_args(handle_file(str(tmp_path / "in.png")), mask={**editor, "composite": None}), api_name="/translate"
    )
    result = np.asarray(Image.open(out).convert("RGB"))
    assert np.array_equal(result[:, RES // 2 :], source[:, RES // 2 :])
    assert not np.array_equal(result[:, : RES // 2], source[:, : RES // 2])
    assert "Region" in status and Image.open(side).size[0] > 3 * RES


def test_demo_offers_the_shipped_students_on_the_embedded_model():
    from lsb.surfaces.demo import Translator

    t = Translator(None, device="cpu")
    assert "student" in t.methods and {"circle-square", "square-circle"} <= set(t.students)
    out, side, strip, status = t(str(EXAMPLE), "ignored", "ignored", method="student", student="circle-square")
    assert out.size == (64, 64) and strip is None and side.size[0] > 2 * 64
    assert "1 network call" in status and "a circle" in status and "a square" in status
    with pytest.raises(ValueError, match="pick a student"):
        t(str(EXAMPLE), "a", "b", method="student", student="nope")
    assert "student" not in Translator("mini-sd3").methods  # students are the mini SD's
