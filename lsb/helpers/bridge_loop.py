"""The LSB sampling loop, once, for every translation pipeline of the family (SD, SDXL, SD3, FLUX).

The Latent Schrödinger Bridge pipelines differ only in how a prompt conditions their network and in
which base (VP or rectified flow) the scheduler matches the bridge onto; the loop body is the same:

    for each bridge time t_i of the scheduler's grid:
        y    = scheduler.scale_model_input(x, t_i)            # SNR matching onto the base
        out  = network([y; y], t_i)                             # ONE batched call: [source; target] prompts
        x    = scheduler.step(out, t_i, x, guidance_scale)      # predictors -> next bridge state
        (finite check, trajectory entry, callback_on_step_end, progress bar)

Each pipeline builds ``network`` as a closure over its constant conditioning (prompt embeddings already
concatenated as ``[source; target]`` once before the loop; SDXL adds ``added_cond_kwargs``; SD3 / FLUX
call their transformer), so the per-step work is the model call and the scheduler step only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

#: ``network(model_input, timestep) -> model_output``: model_input is ``[y; y]`` (twice the latent batch),
#: the output the batched ``[source; target]`` prediction the scheduler's ``step`` splits.
BridgeNetwork = Callable[[torch.Tensor, Any], torch.Tensor]


def integrate_bridge(
    pipe,
    latents: torch.Tensor,
    network: BridgeNetwork,
    guidance_scale: float,
    *,
    progress_bar=None,
    return_trajectory: bool = False,
    callback_on_step_end: Callable | None = None,
    callback_on_step_end_tensor_inputs: list[str] | None = None,
    callback_state: dict[str, Any] | None = None,
    region_blend: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, list[dict[str, Any]] | None]:
    """Integrate the LSB probability-flow ODE from ``latents`` over ``pipe.scheduler``'s grid.

    ``pipe.scheduler.set_timesteps(...)`` must have been called and ``latents`` be the initial bridge state
    (``scheduler.prepare_initial_sample``). Each entry of ``scheduler.timesteps`` costs exactly one call of
    ``network`` (one NFE).

    Args:
        pipe: the calling pipeline: its ``scheduler`` (an LSB scheduler: ``scale_model_input``, ``step`` taking the
            batched ``[source; target]`` output and ``guidance_scale``, ``bridge_times``), and the first argument
            given to ``callback_on_step_end``.
        latents: the bridge state x_{t0}, (B, C, h, w) (or the pipeline's own latent layout, e.g. packed tokens).
        network: ``network(model_input, timestep)`` with ``model_input = cat([y, y])`` (batch 2B) returns the model
            output for ``[source; target]`` (batch 2B), e.g. ``lambda x, t: unet(x, t, encoder_hidden_states=
            both_embeds, return_dict=False)[0]`` with ``both_embeds = cat([source, target])`` built once.
        guidance_scale: the paper's CFG weight w on the predictor difference (passed to ``scheduler.step``).
        progress_bar: an object with ``update()`` (e.g. the ``pipe.progress_bar(...)`` context the pipeline
            opened); ``None`` opens ``pipe.progress_bar(total=len(timesteps))`` here; ``False`` shows none.
        return_trajectory: collect one dict per step: bridge time ``t``, model ``timestep``, state ``x_t`` and the
            ``source`` / ``target`` predictors (detached, on CPU).
        callback_on_step_end: ``fn(pipe, step, timestep, tensors) -> dict`` after every step, diffusers-style;
            ``tensors`` holds the names of ``callback_on_step_end_tensor_inputs`` looked up in ``{"latents": x,
            **callback_state}``. A returned ``"latents"`` replaces the state; other returned keys are ignored
            (the conditioning is fixed inside ``network``).
        callback_on_step_end_tensor_inputs: names passed to the callback (checked by the pipeline's check_inputs).
        callback_state: the other tensors a callback may read (e.g. ``source_prompt_embeds``).
        region_blend: a user mask (:func:`lsb.helpers.masks.bridge_region_blend`): ``region_blend(x, i)`` puts the kept
            region of the state before call ``i`` (``i == len(timesteps)``: the final state) back on the source's own
            bridge path; applied to the initial state and after every step.

    Returns:
        ``(latents, trajectory)``: the final state (the translated latent) and the trajectory list or ``None``.

    Raises:
        FloatingPointError: NaN/inf in the state after a step (naming the step and timestep).
    """
    scheduler = pipe.scheduler
    timesteps = scheduler.timesteps
    trajectory: list[dict[str, Any]] | None = [] if return_trajectory else None
    names = list(callback_on_step_end_tensor_inputs or [])
    state = dict(callback_state or {})

    if progress_bar is None:
        with pipe.progress_bar(total=len(timesteps)) as bar:
            return integrate_bridge(
                pipe,
                latents,
                network,
                guidance_scale,
                progress_bar=bar,
                return_trajectory=return_trajectory,
                callback_on_step_end=callback_on_step_end,
                callback_on_step_end_tensor_inputs=names,
                callback_state=state,
                region_blend=region_blend,
            )

    if region_blend is not None:
        latents = region_blend(latents, 0)
    for i, t in enumerate(timesteps):
        model_input = scheduler.scale_model_input(latents, t)
        model_output = network(torch.cat([model_input, model_input]), t)
        out = scheduler.step(model_output, t, latents, guidance_scale=guidance_scale)
        latents = out.prev_sample
        if region_blend is not None:
            latents = region_blend(latents, i + 1)
        if not torch.isfinite(latents).all():
            raise FloatingPointError(f"NaN/inf in the latents after step {i} (timestep {float(t):.2f})")
        if trajectory is not None:
            trajectory.append(
                {
                    "t": float(scheduler.bridge_times[i]),
                    "timestep": float(t),
                    "x_t": latents.detach().cpu(),
                    "source": out.pred_source_sample.detach().cpu(),
                    "target": out.pred_target_sample.detach().cpu(),
                }
            )
        if callback_on_step_end is not None:
            local = {"latents": latents, **state}
            res = callback_on_step_end(pipe, i, t, {k: local[k] for k in names})
            latents = (res or {}).get("latents", latents)
        if progress_bar is not False:
            progress_bar.update()
    return latents, trajectory


__all__ = ["BridgeNetwork", "integrate_bridge"]
