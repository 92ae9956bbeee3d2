"""``lsb learn-domain``: learn a domain token from a folder of unpaired images (prompt optimization)."""

from __future__ import annotations

from . import CONVERT_MODE_HELP


def register(sub) -> None:
    p = sub.add_parser("learn-domain", help="learn a domain token from a folder of unpaired images",
                       description="Prompt optimization (textual inversion of a domain). Rerun to resume.")
    p.add_argument("--images", required=True, nargs="+", help="folder(s) or files of the domain's images")
    p.add_argument("--token", required=True, help='new placeholder token, e.g. "<circle>"')
    p.add_argument("--model", default=None, help="diffusers SD folder or Hub id (default: the embedded mini SD)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--num-vectors", type=int, default=1)
    p.add_argument("--init", default=None, help="initializer word (default: 'shape' on the mini SD, else 'a')")
    p.add_argument("--templates", default=None, help="template preset: 'paper' or 'mini' (default: by model)")
    p.add_argument("--checkpoint-every", type=int, default=250)
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--convert-mode", action="store_true", help=CONVERT_MODE_HELP)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("-o", "--output", required=True, help="output folder: learned_embeds.safetensors + checkpoints")
    p.set_defaults(func=cmd_learn_domain)


def cmd_learn_domain(args) -> int:
    from ...training.prompt_optimization import learn_domain

    path = learn_domain(args.images, args.token, args.model, output_dir=args.output, steps=args.steps,
                        learning_rate=args.lr, batch_size=args.batch_size, num_vectors=args.num_vectors,
                        initializer_token=args.init, templates=args.templates, seed=args.seed,
                        checkpoint_every=args.checkpoint_every, max_images=args.max_images, device=args.device,
                        convert_mode=args.convert_mode)
    from accelerate import PartialState

    state = PartialState()  # set up by the training loop; several under `accelerate launch`
    if state.is_main_process:
        print(f"wrote {path}" + (f" ({state.num_processes} processes)" if state.num_processes > 1 else ""))
    return 0
