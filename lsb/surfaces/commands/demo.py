"""``lsb demo``: serve the Gradio translation demo (the methods of the model's family) in the browser."""

from __future__ import annotations

import math
import os

from . import add_dtype_argument, add_memory_arguments


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="serve the translation demo in the browser (Gradio)",
        description="Start the Gradio demo: upload an image, pick source/target domains and "
        "a method (LSB and the baselines of the model's family: SDEdit, DDIB on SD / SDXL; FlowEdit, SDEdit on "
        "SD3 / FLUX.1 / Z-Image / Qwen-Image; FlowEdit on FLUX.2). Needs the 'demo' extra (gradio). Learned "
        "domains come only from uploads or from --domains; Gradio analytics are "
        "off unless GRADIO_ANALYTICS_ENABLED=True.",
    )
    p.add_argument(
        "--model",
        default=None,
        help="diffusers SD 1.x/2.x, SDXL, SD3, FLUX.1, Z-Image, Qwen-Image or FLUX.2 folder, mini-sd3, `lsb export` folder or Hub id "
        "(default: $LSB_DEMO_MODEL, else the embedded mini SD)",
    )
    p.add_argument(
        "--domains",
        default=None,
        metavar="DIR",
        help="folder of learned domains the page offers by name (DIR/<name>/learned_embeds.safetensors "
        "or DIR/<name>.safetensors; default: $LSB_DEMO_DOMAINS, else none)",
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="largest input (width x height) with resizing off (default: $LSB_DEMO_MAX_PIXELS, else 4x "
        "the model's native area)",
    )
    p.add_argument(
        "--time-limit",
        type=float,
        default=None,
        metavar="SECONDS",
        help="longest one translation may run (default: $LSB_DEMO_TIME_LIMIT, else 120)",
    )
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        default=None,
        help="run custom code of a Hub model (a local folder you name is trusted; lsb exports need none)",
    )
    p.add_argument("--port", type=int, default=None, help="server port (default: 7860 or the next free one)")
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--share", action="store_true", help="also create a public gradio.live link")
    p.add_argument("--device", default=None, help="torch device (default: cuda, mps or cpu)")
    add_dtype_argument(p)
    add_memory_arguments(p)
    p.add_argument("--concurrency", type=int, default=1, help="translations run at once (default 1)")
    p.add_argument("--max-queue", type=int, default=16, help="requests waiting in the queue at most (default 16)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    if args.port is not None and not 0 < args.port < 65536:
        raise ValueError(f"--port must lie between 1 and 65535, got {args.port}")
    if args.concurrency < 1 or args.max_queue < 1:
        raise ValueError("--concurrency and --max-queue must be at least 1")
    if args.max_pixels is not None and args.max_pixels < 64:
        raise ValueError(f"--max-pixels must be at least 64, got {args.max_pixels}")
    if args.time_limit is not None and not (math.isfinite(args.time_limit) and args.time_limit > 0):
        raise ValueError(f"--time-limit must be a positive number of seconds, got {args.time_limit}")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # analytics off unless asked for, before gradio
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ValueError("the demo needs gradio: pip install 'lsb[demo]'") from None
    from .. import checks
    from ..demo import MODEL_ENV, build_demo, launch_demo
    from . import check_family_and_method

    model = args.model or os.environ.get(MODEL_ENV) or None
    checks.check_model_arg(model)  # a missing folder: one line now, not at the first translation
    if model is not None and os.path.isdir(os.path.expanduser(str(model))):
        checks.check_model_folder_before_load(model)  # kind, completeness, weight files: one line, no compute
    check_family_and_method(checks.embedded_model(model), None, args.dtype)  # another kind of model: one line
    _check_port(args.host, args.port)
    demo = build_demo(
        model,
        device=args.device,
        concurrency_limit=args.concurrency,
        max_queue=args.max_queue,
        domains=args.domains,
        max_pixels=args.max_pixels,
        time_limit=args.time_limit,
        trust_remote_code=args.trust_remote_code,
        dtype=args.dtype,
        offload=args.offload,
        quantize=args.quantize,
    )
    _load_model(demo, model)  # loaded (or refused, in one line) before the server starts
    try:
        launch_demo(demo, server_name=args.host, server_port=args.port, share=args.share)
    except OSError as e:  # the port was taken in between, or the address cannot be used
        raise ValueError(f"the demo server could not start on {args.host or '127.0.0.1'}:{args.port} ({e})") from None
    return 0


def _check_port(host, port) -> None:
    """A ``--port`` another program listens on: one line before anything loads (without ``--port`` Gradio takes
    the next free one from 7860)."""
    if port is None:
        return
    import socket

    addr = host or "127.0.0.1"
    try:
        with socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((addr, port))
    except OSError as e:
        raise ValueError(
            f"--port {port}: cannot listen on {addr}:{port} ({e.strerror or e}); another program uses it? choose "
            f"another port, or leave --port out to take the next free one"
        ) from None


def _load_model(demo, model) -> None:
    """The demo's LSB pipeline loaded now: a wrong, incomplete or unreachable model fails before the page is served."""
    from .. import checks

    checks.quiet_loading()
    if model is None or os.path.isdir(os.path.expanduser(str(model))):
        checks.check_model_folder_before_load(model)
        demo.translator.pipeline("lsb")
        return
    try:
        demo.translator.pipeline("lsb")
    except OSError as e:  # a Hub id that cannot be loaded (offline, no such repo)
        raise checks.hub_failure(model, e) from None
