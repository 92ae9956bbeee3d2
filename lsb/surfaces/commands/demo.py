"""``lsb demo``: serve the Gradio translation demo (LSB, SDEdit, DDIB) in the browser."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="serve the translation demo in the browser (Gradio)",
                              description="Start the Gradio demo: upload an image, pick source/target domains and "
                                          "a method (LSB, SDEdit, DDIB). Needs the 'demo' extra (gradio).")
    p.add_argument("--model", default=None,
                   help="diffusers SD folder or Hub id (default: $LSB_DEMO_MODEL, else the embedded mini SD)")
    p.add_argument("--port", type=int, default=None, help="server port (default: 7860 or the next free one)")
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--share", action="store_true", help="also create a public gradio.live link")
    p.add_argument("--device", default=None, help="torch device (default: cuda, mps or cpu)")
    p.add_argument("--concurrency", type=int, default=1, help="translations run at once (default 1)")
    p.add_argument("--max-queue", type=int, default=16, help="requests waiting in the queue at most (default 16)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    if args.port is not None and not 0 < args.port < 65536:
        raise ValueError(f"--port must lie between 1 and 65535, got {args.port}")
    if args.concurrency < 1 or args.max_queue < 1:
        raise ValueError("--concurrency and --max-queue must be at least 1")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ValueError("the demo needs gradio: pip install 'lsb[demo]'") from None
    from ..demo import build_demo, launch_demo

    demo = build_demo(args.model, device=args.device, concurrency_limit=args.concurrency, max_queue=args.max_queue)
    launch_demo(demo, server_name=args.host, server_port=args.port, share=args.share)
    return 0
