"""Load a trained restoration pipeline (bridge, Palette-style, DiffIR, DDM) from its folder, by the class it names."""

from __future__ import annotations

from pathlib import Path

import torch

from ..families import read_model_index
from ..helpers.loading import ModelFolderError, device_and_dtype, model_index_file
from ..io.quiet import quiet_loading_if_requested
from ..io.weights import check_model_files


def load_restoration_pipeline(
    path: str | Path, device: str | torch.device | None = None, dtype: torch.dtype | None = None
):
    """Load any lsb restoration pipeline folder by the ``_class_name`` in its ``model_index.json``.

    The class is looked up as ``getattr(lsb, _class_name)`` (``BridgeRestorationPipeline``,
    ``ConditionalDiffusionRestorationPipeline``, ``DiffIRPipeline``, ... : every pipeline of :func:`lsb.pipeline_class_names`) and
    loaded with its ``from_pretrained``, moved to ``device`` (default: cuda / mps / cpu) in ``dtype`` (default:
    float16 on cuda, float32 elsewhere). Missing folders, a missing or broken ``model_index.json`` and unknown
    classes raise :class:`ModelFolderError` / ``ValueError`` naming the folder.
    """
    import lsb

    p = Path(path).expanduser()
    index = model_index_file(p, "restoration model", "pipeline")
    try:
        class_name = read_model_index(p).get("_class_name")  # THE reader (lsb.families)
    except (ValueError, AttributeError) as e:  # json.JSONDecodeError, a list instead of an object
        raise ModelFolderError(f"{index} is not a valid model_index.json ({e})") from None
    if isinstance(class_name, list):  # ["module", "Class"] form of Hub-shipped custom pipelines
        class_name = class_name[-1]
    known = lsb.pipeline_class_names()
    if not isinstance(class_name, str) or class_name not in known:
        raise ValueError(
            f"{p}: model_index.json names the pipeline class {class_name!r}, which lsb does not know; "
            f"known pipelines: {', '.join(sorted(known))}"
        )
    check_model_files(p, kind="restoration")  # truncated or unreadable weights: one line (lsb.io.weights)
    device, dtype = device_and_dtype(device, dtype)
    quiet_loading_if_requested()  # the lsb CLI: no nested loading bars (lsb.io.quiet)
    pipe = getattr(lsb, class_name).from_pretrained(str(p), dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
