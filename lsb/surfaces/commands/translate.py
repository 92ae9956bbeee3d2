"""``lsb translate``: translate images from a source domain to a target domain (LSB, SDEdit, DDIB)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ...io.settings import PAPER_TRANSLATION, translation_defaults
from . import CONVERT_MODE_HELP

# Defaults for translation. They are the paper's (METHODS.md section 2) except where the embedded
# model needs others; see README "Choosing parameters" for the measurements behind each.
# The values live in ONE place, lsb.io.settings (the paper's) and each model folder's lsb_defaults.json (the
# embedded model's: lsb/assets/mini-sd/lsb_defaults.json); these dicts use the CLI's option names.
def _cli_defaults(d) -> dict:
    return dict(nfe=d.num_inference_steps, tau=d.tau, t0=d.t0, guidance=d.guidance_scale, solver=d.solver)


TRANSLATE_DEFAULTS = _cli_defaults(PAPER_TRANSLATION)
MINI_SD_TRANSLATE_DEFAULTS = _cli_defaults(translation_defaults(None))  # tuned on the val split

def _default_note(key: str) -> str:
    a, b = MINI_SD_TRANSLATE_DEFAULTS[key], TRANSLATE_DEFAULTS[key]
    return f" (default {a})" if a == b else f" (default {a} on the embedded model, {b} on others)"


def register(sub) -> None:
    p = sub.add_parser("translate", help="translate images from a source domain to a target domain",
                       description="Translate images with the Latent Schrödinger Bridge (default) or a baseline.")
    p.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    p.add_argument("--source", required=True, help="source domain: text, or a learned_embeds.safetensors file/folder")
    p.add_argument("--target", required=True, help="target domain: text, or a learned_embeds.safetensors file/folder")
    p.add_argument("--model", default=None, help="diffusers SD folder or Hub id (default: the embedded mini SD)")
    p.add_argument("--method", default="lsb", choices=["lsb", "sdedit", "ddib"],
                   help="lsb, or the LSB paper's baselines sdedit / ddib (same NFE budget)")
    p.add_argument("--nfe", type=int, default=None, help="UNet evaluations per image" + _default_note("nfe"))
    p.add_argument("--tau", type=float, default=None, help="bridge noise τ (paper's τ; official --tau is sqrt(τ))" + _default_note("tau"))
    p.add_argument("--t0", type=float, default=None, help="bridge start time t0 in (0, 1)" + _default_note("t0"))
    p.add_argument("--guidance", type=float, default=None, help="guidance weight w on the predictor difference" + _default_note("guidance"))
    p.add_argument("--solver", default=None, choices=["euler", "ddim", "multistep"], help="ODE solver" + _default_note("solver"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=None, help="resize inputs to SIZE x SIZE first (default: keep size)")
    p.add_argument("--convert-mode", action="store_true", help=CONVERT_MODE_HELP)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default=None)
    p.add_argument("-o", "--output", required=True, help="output folder (created)")
    p.set_defaults(func=cmd_translate)


def cmd_translate(args) -> int:
    from ...io.images import check_size, list_images, load_image, make_grid, save_image
    from ...prompts.domains import load_domain
    from ..translators import load_translator

    files = list_images(args.inputs)
    defaults = _cli_defaults(translation_defaults(args.model))  # the model folder's lsb_defaults.json, else the paper's
    nfe = args.nfe if args.nfe is not None else defaults["nfe"]
    tau = args.tau if args.tau is not None else defaults["tau"]
    t0 = args.t0 if args.t0 is not None else defaults["t0"]
    guidance = args.guidance if args.guidance is not None else defaults["guidance"]
    if args.method != "lsb" and args.solver:
        raise ValueError("--solver applies only to --method lsb")
    solver = (args.solver or defaults["solver"]) if args.method == "lsb" else None
    if nfe < 2:
        raise ValueError(f"--nfe must be at least 2, got {nfe}")
    if not 0 < t0 < 1:
        raise ValueError(f"--t0 must lie strictly between 0 and 1, got {t0}")
    if not tau > 0:
        raise ValueError(f"--tau must be positive, got {tau}")
    # Validate every input before loading the model: a bad file is reported by name, nothing runs.
    images = [check_size(load_image(f, convert=args.convert_mode), str(f), resize_to=args.size) for f in files]
    for f, im in zip(files, images):
        if "converted_from" in im.info:
            print(f"{f}: converted from mode {im.info['converted_from']} to RGB", file=sys.stderr)
    # One process, or several under `accelerate launch` (lsb.surfaces.translate_files: identical outputs either way).
    from ...io.execution import process_state
    from ..translate_files import translate_files

    state = process_state(args.device)
    device = args.device if args.device is not None or state.num_processes == 1 else state.device
    pipe = load_translator(args.method, args.model, device=device)
    if args.method == "lsb":
        pipe.scheduler.register_to_config(solver=solver)
    source, target = load_domain(pipe, args.source), load_domain(pipe, args.target)
    out = Path(args.output)
    done = translate_files(args.method, pipe, files, images, source, target, out, nfe=nfe, guidance=guidance,
                           tau=tau, t0=t0, seed=args.seed, batch_size=args.batch_size, state=state)
    if not state.is_main_process:
        return 0
    results = [(images[k], load_image(dest)) for k, dest in done]
    grid = make_grid([x for pair in results for x in pair], nrow=2 * min(4, len(results)))
    save_image(grid, out / "grid.png")
    (out / "settings.json").write_text(json.dumps(dict(
        model=args.model or "mini-sd", method=args.method, source=args.source, target=args.target,
        nfe=nfe, tau=tau, t0=t0, guidance=guidance, solver=solver, seed=args.seed), indent=2))
    print(f"wrote {len(results)} image(s) and grid.png to {out} (NFE {nfe} per image"
          + (f", {state.num_processes} processes)" if state.num_processes > 1 else ")"))
    return 0
