"""The per-file loop of ``lsb translate``, split across processes with accelerate.

``python -m lsb translate ...`` runs it in one process; ``accelerate launch -m lsb translate ...`` runs it
in several, each translating a share of the batches and writing its own output PNGs. The outputs are
exactly those of a single process because nothing depends on which process runs what:

* batches are planned globally, before splitting, exactly as one process would run them (inputs grouped
  by size in input order, then chunks of ``batch_size``), and whole batches are distributed with
  ``PartialState().split_between_processes``, so every image is computed in the same batch company;
* each image's seed is ``seed + its index among the inputs of its size`` (its global position; the
  historical ``lsb translate`` rule), never a per-process index.

The main process writes ``grid.png`` (from the PNGs on disk) and ``settings.json`` after
``wait_for_everyone``.

Launching several CPU processes: ``accelerate launch --cpu --num_processes N`` starts only ONE process
unless an MPI hostfile is given (accelerate's simple launcher). Use the torchrun launcher instead:
``accelerate launch --multi_gpu --num_processes N --num_machines 1 --mixed_precision no --dynamo_backend no
-m lsb translate ...``; on a machine without GPUs :func:`lsb.io.execution.process_state` asks accelerate for the CPU (gloo)
backend. Bit-exact equality with one process also needs the same number of CPU threads per process
(e.g. ``OMP_NUM_THREADS=1``), since float reductions may be ordered differently with other thread counts.
"""

from __future__ import annotations

import sys
from pathlib import Path


def plan_batches(files, images, batch_size: int, seed: int) -> list[list[tuple[int, Path, int]]]:
    """Global batch plan: a list of batches, each a list of ``(input index, file, seed)``.

    Inputs are grouped by image size (first-seen order), each group cut into chunks of ``batch_size``;
    an image's seed is ``seed`` plus its index within its size group.
    """
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    groups: dict = {}
    for k, (f, im) in enumerate(zip(files, images)):
        groups.setdefault(im.size, []).append((k, Path(f)))
    batches = []
    for items in groups.values():
        for i in range(0, len(items), batch_size):
            batches.append([(k, f, seed + i + j) for j, (k, f) in enumerate(items[i : i + batch_size])])
    return batches


def output_path(out: Path, f) -> Path:
    return Path(out) / f"{Path(f).stem}.png"


def translate_files(
    method,
    pipe,
    files,
    images,
    source,
    target,
    out,
    *,
    nfe,
    guidance,
    tau,
    t0,
    seed=0,
    batch_size=8,
    state=None,
    names=None,
    postprocess=None,
    counts=None,
    masks=None,
    mask_feather=None,
    skip=(),
    record=None,
) -> list[tuple[int, Path]]:
    """Translate ``images`` (already loaded and checked; ``files`` are their names) into ``out``.

    Runs this process's share of the global batch plan (all of it in a single process) and waits for
    the others. Returns ``(input index, output path)`` for EVERY input in plan order (the files of
    other processes included), valid on every process after the barrier. ``names``: each input's output path
    relative to ``out`` (default ``<stem>.png``; ``lsb.surfaces.outputs.output_names`` makes them distinct);
    ``postprocess(index, image)``: applied to each output before it is written (e.g. resizing back).
    ``counts``: a list that receives ``(nfe, forward_passes)`` per batch (batched network calls, latents per image).
    ``masks``: one mask per input (``lsb translate --mask``), passed with ``mask_feather`` as ``mask_image``.
    ``skip``: input indices already translated (a resumed run; each other input keeps the seed of the full plan);
    ``record(index, path)``: called after each output is written (the run's manifest, on the main process).
    """
    import torch

    from ..io.execution import process_state
    from ..io.images import save_image
    from ..io.runs import shown
    from .translators import translate

    state = state or process_state()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    batches = plan_batches(files, images, batch_size, seed)
    skip = set(skip)
    todo = [b for b in ([item for item in batch if item[0] not in skip] for batch in batches) if b]

    def dest_of(k, f):
        return out / names[k] if names is not None else output_path(out, f)

    with state.split_between_processes(todo) as mine:
        for batch in mine:
            gen = [torch.Generator().manual_seed(s) for _, _, s in batch]
            outs, spent, passes = translate(
                method,
                pipe,
                [images[k] for k, _, _ in batch],
                source,
                target,
                nfe=nfe,
                guidance_scale=guidance,
                tau=tau,
                t0=t0,
                generator=gen,
                return_forward_passes=True,
                **(
                    {}
                    if masks is None
                    else {"mask_image": [masks[k] for k, _, _ in batch], "mask_feather": mask_feather}
                ),
            )
            if counts is not None:
                counts.append((spent, passes))
            for (k, f, _), o in zip(batch, outs):
                dest = save_image(postprocess(k, o) if postprocess else o, dest_of(k, f))
                if record is not None:
                    record(k, dest)
                sys.stdout.write(f"{shown(f)} -> {shown(dest)}\n")  # one write: lines of several processes never merge
                sys.stdout.flush()
    state.wait_for_everyone()
    return [(k, dest_of(k, f)) for batch in batches for k, f, _ in batch]
