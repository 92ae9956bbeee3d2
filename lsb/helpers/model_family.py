"""Which base a model belongs to (VP diffusion or rectified flow), checked before any compute.

The LSB translators exist per model family (SD 1.x/2.x, SDXL: a VP ``UNet2DConditionModel`` with a
beta-schedule scheduler; SD3 / SD3.5, FLUX.1: a rectified-flow transformer with a
``FlowMatchEulerDiscreteScheduler``). A component of the other base given to a pipeline would run and
produce noise; these checks turn that into a ValueError naming the pipeline, the component and the
pipeline to use instead.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..families import FAMILIES, read_model_index
from ..schedulers.scheduling_lsb import config_base


def _network_families() -> dict[str, tuple[str, str]]:
    """network class name -> (base, the LSB pipeline(s) for it), from the family records."""
    table: dict[str, tuple[str, list[str]]] = {}
    for family in FAMILIES.values():
        pipeline = family.pipelines["lsb"].rpartition(":")[2]
        for name in family.network_classes:
            base, pipes = table.setdefault(name, (family.base, []))
            pipes.append(f"{pipeline} ({family.label})" if family.network == "unet" else pipeline)
    return {name: (base, " or ".join(pipes)) for name, (base, pipes) in table.items()}


#: network class name -> (base, the LSB pipeline for it)
NETWORK_FAMILIES = _network_families()


def scheduler_base(scheduler) -> str | None:
    """``"flow"`` for a rectified-flow scheduler, ``"vp"`` for a VP (beta-schedule) one, None for an unknown object.

    An :class:`lsb.LSBScheduler` says it (``.base``); any other scheduler object or config dict is classified by
    :func:`lsb.schedulers.scheduling_lsb.config_base` (``FlowMatch*`` classes and flow-only config keys -> flow).
    """
    if isinstance(scheduler, dict):
        return config_base(scheduler)
    if isinstance(getattr(scheduler, "base", None), str):
        return scheduler.base
    config = getattr(scheduler, "config", None)
    if config is None:
        return None
    return config_base({"_class_name": type(scheduler).__name__, **dict(config)})


def _network_name(network) -> str:
    return network if isinstance(network, str) else type(network).__name__


def check_network(pipeline_name: str, network, expected: tuple[str, ...], role: str) -> None:
    """ValueError unless ``network`` (object or class name) is one of ``expected`` (class names).

    A known network of another family is named with the pipeline that runs it.
    """
    name = _network_name(network)
    if network is None or name in expected or any(c.__name__ in expected for c in type(network).__mro__):
        return
    if name in NETWORK_FAMILIES:
        family, other = NETWORK_FAMILIES[name]
        kind = "a rectified-flow model" if family == "flow" else "a VP diffusion model"
        raise ValueError(
            f"{pipeline_name} got {role}={name}, {kind}; it runs {' / '.join(expected)}. Use {other} for this model"
        )
    raise ValueError(f"{pipeline_name} got {role}={name}; it runs {' / '.join(expected)}")


def check_scheduler_base(pipeline_name: str, scheduler, expected_base: str) -> None:
    """ValueError if ``scheduler`` belongs to the other base than ``expected_base`` ("vp" or "flow")."""
    base = scheduler_base(scheduler)
    if base is None or base == expected_base:
        return
    name = scheduler.get("_class_name") if isinstance(scheduler, dict) else type(scheduler).__name__
    if expected_base == "flow":
        raise ValueError(
            f"{pipeline_name} needs a rectified-flow scheduler (a FlowMatchEulerDiscreteScheduler config, "
            f"as SD3 / FLUX ship); got {name}, a VP diffusion scheduler (betas, SD 1.x/2.x/SDXL): use "
            "LatentSchrodingerBridgePipeline / LatentSchrodingerBridgeXLPipeline for that model"
        )
    raise ValueError(
        f"{pipeline_name} needs a VP diffusion scheduler (betas, as SD 1.x/2.x/SDXL ship); got {name}, "
        "a rectified-flow scheduler (SD3 / FLUX): use LatentSchrodingerBridgeSD3Pipeline / "
        "LatentSchrodingerBridgeFluxPipeline for that model"
    )


def check_vp_components(pipeline_name: str, unet, scheduler) -> None:
    """For the VP pipelines: ``unet`` a UNet2DConditionModel and ``scheduler`` not a flow scheduler."""
    check_network(pipeline_name, unet, ("UNet2DConditionModel",), "unet")
    check_scheduler_base(pipeline_name, scheduler, "vp")


def check_flow_components(pipeline_name: str, transformer, scheduler, expected: str) -> None:
    """For the flow pipelines: ``transformer`` of class ``expected`` and ``scheduler`` not a VP scheduler."""
    check_network(pipeline_name, transformer, (expected,), "transformer")
    check_scheduler_base(pipeline_name, scheduler, "flow")


def check_model_folder_family(pipeline_name: str, path, network_key: str, expected: str) -> None:
    """Before ``from_pretrained`` of a local folder: its ``model_index.json`` holds ``network_key`` of class
    ``expected``, and a scheduler of the right base (a folder of the other family fails by name)."""
    if not (Path(path) / "model_index.json").is_file():
        return  # a Hub id or another layout: diffusers' loader reports it
    index = read_model_index(path)
    networks = {
        key: index[key][1]
        for key in ("unet", "transformer")
        if isinstance(index.get(key), list) and len(index[key]) == 2 and index[key][1]
    }
    if network_key not in networks:
        found = ", ".join(f"{k}={v}" for k, v in networks.items()) or "no unet / transformer"
        name = next(iter(networks.values()), None)
        other = f"; use {NETWORK_FAMILIES[name][1]} for it" if name in NETWORK_FAMILIES else ""
        raise ValueError(f"{pipeline_name} needs a folder with a {network_key} ({expected}); {path} has {found}{other}")
    check_network(pipeline_name, networks[network_key], (expected,), network_key)
    sched = index.get("scheduler")
    if isinstance(sched, list) and len(sched) == 2 and sched[1]:
        config_path = Path(path) / "scheduler" / "scheduler_config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        config.setdefault("_class_name", sched[1])
        check_scheduler_base(pipeline_name, config, "vp" if network_key == "unet" else "flow")


__all__ = [
    "NETWORK_FAMILIES",
    "check_flow_components",
    "check_model_folder_family",
    "check_network",
    "check_scheduler_base",
    "check_vp_components",
    "scheduler_base",
]
