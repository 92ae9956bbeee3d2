"""Bridge specs and scheduler factories of the restoration bridges (I2SB, DDBM, DBIM).

What a bridge model was trained for is recorded in its pipeline config as ``trained_bridge``, the
:func:`bridge_spec` of the scheduler it was trained with: the bridge schedule and every constant the loss and the
preconditioning depend on. :func:`check_scheduler_for_bridge` compares a sampling scheduler against it, so that a
scheduler for another bridge fails with a clear error before any compute. :func:`make_bridge_scheduler` builds
the I2SB, DDBM or DBIM sampler for a trained bridge, :func:`training_scheduler` the one a bridge is trained with.
"""

from __future__ import annotations

from .restoration_tasks import BRIDGES, I2SB_BETA_MAX, LATENT_SIGMA_DATA, SAMPLERS, check_task


def bridge_spec(scheduler) -> dict:
    """The bridge a scheduler samples, as a JSON-able dict of the constants training and sampling must share.

    ``{"bridge": "i2sb", num_train_timesteps, beta_min, beta_max, official_cumsum}`` for I2SBScheduler and
    DBIMScheduler(schedule="i2sb"); ``{"bridge": "vp", beta_d, beta_min, sigma_data, cov_xy}`` and
    ``{"bridge": "ve", sigma_max, sigma_data, cov_xy}`` for DDBM / DBIM on DDBM's bridges (their EDM-style
    preconditioning depends on sigma_data and cov_xy); ``{"bridge": "noise", ...betas}`` for a noise-to-image
    diffusers scheduler (DDIM, DDPM, ...).
    """
    from ..schedulers import DBIMScheduler, DDBMScheduler, I2SBScheduler

    c = scheduler.config
    if isinstance(scheduler, I2SBScheduler) or (isinstance(scheduler, DBIMScheduler) and c.schedule == "i2sb"):
        return {
            "bridge": "i2sb",
            "num_train_timesteps": int(c.num_train_timesteps),
            "beta_min": float(c.beta_min),
            "beta_max": float(c.beta_max),
            "official_cumsum": bool(c.official_cumsum),
        }
    if isinstance(scheduler, (DBIMScheduler, DDBMScheduler)):
        spec = {"bridge": c.schedule, "sigma_data": float(c.sigma_data), "cov_xy": float(c.cov_xy)}
        if c.schedule == "vp":
            spec.update(beta_d=float(c.beta_d), beta_min=float(c.beta_min))
        else:
            spec.update(sigma_max=float(c.sigma_max))
        return spec
    if hasattr(scheduler, "alphas_cumprod"):
        return {
            "bridge": "noise",
            "num_train_timesteps": int(c.num_train_timesteps),
            "beta_start": float(c.get("beta_start", 0.0)),
            "beta_end": float(c.get("beta_end", 0.0)),
            "beta_schedule": str(c.get("beta_schedule", "")),
            "prediction_type": str(c.get("prediction_type")),
        }
    return {"bridge": type(scheduler).__name__}


def _describe(spec: dict) -> str:
    return spec["bridge"] + "(" + ", ".join(f"{k}={v}" for k, v in spec.items() if k != "bridge") + ")"


def check_scheduler_for_bridge(scheduler, trained: dict) -> None:
    """ValueError unless ``scheduler`` samples the bridge ``trained`` (a :func:`bridge_spec`) was trained on."""
    got = bridge_spec(scheduler)
    same = got.keys() == trained.keys() and all(
        (abs(float(got[k]) - float(trained[k])) <= 1e-9 * max(1.0, abs(float(trained[k]))))
        if isinstance(trained[k], float)
        else got[k] == trained[k]
        for k in trained
    )
    if not same:
        hint = {
            "i2sb": "use --scheduler i2sb or dbim",
            "vp": "use --scheduler ddbm or dbim",
            "ve": "use --scheduler ddbm or dbim",
            "noise": "use a DDIM/DDPM scheduler",
        }.get(trained.get("bridge"), "")
        raise ValueError(
            f"scheduler {type(scheduler).__name__} samples the bridge {_describe(got)}, but the model was trained "
            f"on {_describe(trained)}; {hint} (`make_bridge_scheduler` builds a matching one)"
        )


def make_bridge_scheduler(sampler: str, trained: dict, **overrides):
    """The ``sampler`` ("i2sb", "ddbm", "dbim") scheduler for a model trained on the bridge ``trained``.

    ``overrides`` are sampler settings (eta, solver_order, s_churn, ot_ode, clip_sample, ...). I2SB's sampler needs
    an I2SB-trained model and DDBM's Heun sampler a VP / VE one; DBIM samples all three.
    """
    from ..schedulers import DBIMScheduler, DDBMScheduler, I2SBScheduler

    kind = trained.get("bridge")
    consts = {k: v for k, v in trained.items() if k != "bridge"}
    if sampler == "i2sb":
        if kind != "i2sb":
            raise ValueError(
                f"the I2SB sampler needs a model trained on the I2SB bridge; this one was trained on "
                f"{kind!r} (use --scheduler ddbm or dbim)"
            )
        return I2SBScheduler(**consts, **overrides)
    if sampler == "ddbm":
        if kind not in ("vp", "ve"):
            raise ValueError(
                f"DDBM's Heun sampler needs a model trained on a DDBM VP/VE bridge; this one was trained "
                f"on {kind!r} (use --scheduler i2sb or dbim)"
            )
        return DDBMScheduler(schedule=kind, **consts, **overrides)
    if sampler == "dbim":
        if kind not in ("i2sb", "vp", "ve"):
            raise ValueError(f"DBIM needs a bridge-trained model; this one was trained on {kind!r}")
        return DBIMScheduler(schedule=kind, **consts, **overrides)
    raise ValueError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")


def training_scheduler(bridge: str, task: str, ot_ode: bool = False, sigma_data: float = LATENT_SIGMA_DATA):
    """The scheduler a bridge model of kind ``bridge`` ("i2sb", "ddbm-vp", "ddbm-ve") is trained with and saved with.

    i2sb: ``I2SBScheduler`` with I2SB's per-task beta_max (:data:`I2SB_BETA_MAX`); ddbm-vp / ddbm-ve:
    ``DBIMScheduler`` (the fast default sampler) on DDBM's VP / VE bridge with ``sigma_data`` for latents.
    """
    from ..schedulers import DBIMScheduler, I2SBScheduler

    check_task(task)
    if bridge == "i2sb":
        return I2SBScheduler(beta_max=I2SB_BETA_MAX[task], ot_ode=ot_ode)
    if bridge in ("ddbm-vp", "ddbm-ve"):
        return DBIMScheduler(schedule=bridge.split("-")[1], sigma_data=sigma_data)
    raise ValueError(f"unknown bridge {bridge!r}; choose from {', '.join(BRIDGES)}")


def steps_for_nfe(scheduler, nfe: int) -> int:
    """The ``num_inference_steps`` that spends ``nfe`` network calls (DDBM: N intervals, NFE = 3N - 1 with churn)."""
    from ..schedulers import DDBMScheduler

    if isinstance(scheduler, DDBMScheduler):
        return DDBMScheduler.num_steps_for_nfe(nfe, scheduler.config.s_churn)
    return int(nfe)


__all__ = [
    "bridge_spec",
    "check_scheduler_for_bridge",
    "make_bridge_scheduler",
    "steps_for_nfe",
    "training_scheduler",
]
