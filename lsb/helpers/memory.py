"""Running big models on the GPUs people have: CPU offload, weight quantization, VAE tiling, and a memory estimate
before any weights load.

- **Offload** (``"none"``, ``"model"``, ``"sequential"``): diffusers' ``enable_model_cpu_offload`` (one whole
  component on the accelerator at a time) or ``enable_sequential_cpu_offload`` (one layer at a time: the least
  memory, the slowest). Both need an accelerator; on the CPU they are refused with one line.
- **Quantization** (``"int8"``, ``"float8"``): weight-only quantization with torchao through diffusers'
  ``PipelineQuantizationConfig``, applied to the denoiser (transformer / UNet) and the text encoders; the VAE stays
  in the run dtype. torchao is the backend because its int8 weight-only path runs on every device (the CPU
  included: the tests load real quantized modules), while diffusers' bitsandbytes backend refuses to load without a
  GPU. ``float8`` needs a CUDA GPU of compute capability 8.9 or newer (Ada, Hopper).
- **Memory estimate**: the weights of a local folder read from its safetensors headers (dtype x number of
  elements, without reading any tensor), scaled to the run dtype (quantized components at one byte per weight of
  their matrices), compared with the accelerator's memory; when they will not fit, one line saying what would.
- **VAE tiling** for inputs larger than the model's native size (:func:`tile_vae_for`).
"""

from __future__ import annotations

import importlib.util
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from ..families import ModelFamily, read_model_index
from ..io.memory_options import OFFLOAD_MODES, QUANTIZE_TYPES

#: bytes per element of the safetensors dtypes
SAFETENSORS_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1, "U16": 2, "U32": 4, "U64": 8,
}  # fmt: skip
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")

#: activations, workspace and the CUDA context on top of the weights (fraction of the weights, and at least 1 GiB)
OVERHEAD_FRACTION = 0.1
OVERHEAD_MIN = 1 << 30

GB = 1e9


class MemoryPlanError(ValueError):
    """A model that will not fit the device as asked; the message says what would."""


def check_offload(offload: str | None, device) -> str:
    """``offload`` checked (None means "none"); a ValueError (one line) for an unknown mode or for offload without an
    accelerator to offload to."""
    offload = "none" if offload is None else offload
    if offload not in OFFLOAD_MODES:
        raise ValueError(f"offload must be one of {', '.join(OFFLOAD_MODES)}, got {offload!r}")
    if offload != "none" and torch.device(device).type == "cpu":
        raise ValueError(
            f"--offload {offload} moves weights between the CPU and an accelerator, and this run is on the CPU "
            "(no CUDA / XPU / MPS device): leave --offload unset"
        )
    return offload


def check_quantize(quantize: str | None, device) -> str | None:
    """``quantize`` checked: a known type, its backend (torchao) installed, a device that runs it; one line
    otherwise."""
    if quantize is None or quantize == "none":
        return None
    if quantize not in QUANTIZE_TYPES:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZE_TYPES)} (or none), got {quantize!r}")
    if importlib.util.find_spec("torchao") is None:
        raise ValueError(
            f"--quantize {quantize} needs the torchao package: pip install torchao (or pip install 'lsb[quantize]')"
        )
    device = torch.device(device)
    if quantize == "float8":
        capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
        if capability is None or capability < (8, 9):
            where = f"compute capability {capability[0]}.{capability[1]}" if capability else f"a {device.type} device"
            raise ValueError(
                f"--quantize float8 needs a CUDA GPU of compute capability 8.9 or newer, this run is on {where}: "
                "use --quantize int8"
            )
    return quantize


def quantized_components(family: ModelFamily, index: dict | None = None) -> list[str]:
    """The components ``--quantize`` applies to: the family's denoiser and text encoders (those the model has)."""
    names = [family.network] + [s.text_encoder_attr for s in family.encoder_slots]
    if index:
        names = [n for n in names if isinstance(index.get(n), list) and index[n][0] is not None]
    return names


def quantization_config(quantize: str, family: ModelFamily, index: dict | None = None):
    """diffusers' ``PipelineQuantizationConfig`` quantizing :func:`quantized_components` with torchao's
    ``quantize`` weight-only config (a diffusers ``TorchAoConfig`` for the denoiser, a transformers one for the text
    encoders)."""
    import diffusers
    import torchao.quantization
    import transformers

    config_class = getattr(torchao.quantization, QUANTIZE_TYPES[quantize][0])
    mapping = {}
    for name in quantized_components(family, index):
        library = diffusers if name == family.network else transformers
        mapping[name] = library.TorchAoConfig(config_class())
    return diffusers.PipelineQuantizationConfig(quant_mapping=mapping)


def read_safetensors_header(path: str | Path) -> dict:
    """The JSON header of a safetensors file (tensor name -> dtype, shape, offsets); no tensor is read."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    header.pop("__metadata__", None)
    return header


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files diffusers / transformers load from a component folder: those a shard index lists, else
    the files without a variant (``model.safetensors``), else every safetensors file (a variant-only folder)."""
    indexes = sorted(folder.glob("*.safetensors.index.json"))
    plain = [i for i in indexes if i.name.count(".") == 3] or indexes  # model.safetensors.index.json
    if plain:
        shards = sorted(set(json.loads(plain[0].read_text()).get("weight_map", {}).values()))
        return [folder / s for s in shards if (folder / s).is_file()]
    files = sorted(folder.glob("*.safetensors"))
    base = [f for f in files if f.name.count(".") == 1]
    return base or files


def tensor_bytes(entry: dict, itemsize: int, quantized: bool) -> int:
    """Bytes of one tensor of a header at run time: floating tensors in the run dtype (``itemsize`` bytes), the 2-D
    weights of a quantized component at one byte each, other tensors as stored."""
    numel = math.prod(entry["shape"])
    dtype = entry["dtype"]
    if dtype not in FLOAT_DTYPES:
        return numel * SAFETENSORS_BYTES.get(dtype, 1)
    if quantized and len(entry["shape"]) == 2:
        return numel
    return numel * itemsize


def component_bytes(model_folder, dtype, quantize: str | None = None, family: ModelFamily | None = None) -> dict:
    """component -> the bytes its weights take in ``dtype`` (``quantize``: the family's quantized components at
    one byte per matrix weight), read from the safetensors headers of a local folder."""
    folder = Path(model_folder)
    index = read_model_index(folder)
    quantized = set(quantized_components(family, index)) if (quantize and family is not None) else set()
    itemsize = torch.empty((), dtype=dtype).element_size()
    sizes = {}
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or not (folder / name).is_dir():
            continue
        files = weight_files(folder / name)
        if files:
            sizes[name] = sum(
                tensor_bytes(e, itemsize, name in quantized) for f in files for e in read_safetensors_header(f).values()
            )
    return sizes


@dataclass(frozen=True)
class MemoryEstimate:
    """What a model needs on the accelerator, per option."""

    components: dict  # component -> bytes (as asked: dtype, quantization)
    offload: str

    @property
    def weights(self) -> int:
        return sum(self.components.values())

    @property
    def resident(self) -> int:
        """Bytes of weights on the accelerator at once: all of them, the largest component (model offload) or
        about one layer (sequential offload, counted as 0)."""
        if self.offload == "model":
            return max(self.components.values(), default=0)
        return 0 if self.offload == "sequential" else self.weights

    @property
    def needed(self) -> int:
        """Resident weights plus activations and workspace."""
        return self.resident + max(OVERHEAD_MIN, int(OVERHEAD_FRACTION * self.resident))


def device_memory(device) -> int | None:
    """The total memory of an accelerator in bytes (CUDA / XPU), None where it is not known (CPU, MPS)."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(device.index or 0).total_memory
    if device.type == "xpu" and hasattr(torch, "xpu") and torch.xpu.is_available():
        return torch.xpu.get_device_properties(device.index or 0).total_memory
    return None


def dtype_label(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def plan_line(model_name: str, family: ModelFamily, dtype, offload: str, quantize, needed: int, total: int) -> str:
    what = f"{model_name} ({family.label}) in {dtype_label(dtype)}"
    what += f" with --quantize {quantize}" if quantize else ""
    what += f" and --offload {offload}" if offload != "none" else ""
    return f"{what} needs ~{needed / GB:.0f} GB; this device has {total / GB:.0f} GB"


def check_fits(
    model_folder,
    family: ModelFamily,
    device,
    dtype,
    offload: str = "none",
    quantize: str | None = None,
    available: int | None = None,
) -> MemoryEstimate | None:
    """The memory ``model_folder`` needs as asked, checked against the device's (``available`` bytes; None: read
    from the device, unknown on the CPU / MPS: no check). A :class:`MemoryPlanError` (one line) when it will not
    fit, naming the options that would. None for a model that is not a local folder (a Hub id: nothing to read)."""
    folder = Path(str(model_folder)).expanduser()
    if not (folder / "model_index.json").is_file():
        return None
    asked = MemoryEstimate(component_bytes(folder, dtype, quantize, family), offload)
    total = device_memory(device) if available is None else available
    if total is None or asked.needed <= total:
        return asked
    options, seen = [], {(offload, quantize)}
    for o, q in (
        ("model", quantize),
        (offload, quantize or "int8"),
        ("model", quantize or "int8"),
        ("sequential", quantize),
    ):
        if (o, q) in seen:
            continue
        seen.add((o, q))
        if MemoryEstimate(component_bytes(folder, dtype, q, family), o).needed <= total:
            added = [f"--offload {o}" if o != offload else "", f"--quantize {q}" if q != quantize else ""]
            options.append(" ".join(a for a in added if a))
        if len(options) == 2:
            break
    hint = f": add {' or '.join(options)}" if options else ": use a smaller model or a larger device"
    raise MemoryPlanError(plan_line(folder.name, family, dtype, offload, quantize, asked.needed, total) + hint)


def memory_options(model, family: ModelFamily, device, dtype, offload=None, quantize=None, available=None):
    """Checks the memory options of loading ``model`` (a name the loader resolves) of ``family``, before any
    weights load: ``(device, dtype, load_kwargs)`` with the device and dtype resolved (None / "auto": the family's)
    and the ``offload`` / ``quantization_config`` keywords for :func:`lsb.helpers.loading.load_pipeline`. One line
    (ValueError) for an option the device cannot take or a model that will not fit (:func:`check_fits`)."""
    from .loading import device_and_dtype, resolve_model

    device, dtype = device_and_dtype(device, dtype, family)
    offload = check_offload(offload, device)
    quantize = check_quantize(quantize, device)
    folder = Path(resolve_model(model))
    index = read_model_index(folder) if (folder / "model_index.json").is_file() else None
    check_fits(folder, family, device, dtype, offload, quantize, available=available)
    kwargs = {"offload": offload}
    if quantize:
        kwargs["quantization_config"] = quantization_config(quantize, family, index)
    return device, dtype, kwargs


def apply_offload(pipe, offload: str, device):
    """``pipe`` on ``device``, or offloaded to it (diffusers' model / sequential CPU offload)."""
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe = pipe.to(device)
    return pipe


def largest_side(images) -> int | None:
    """The largest side in pixels of PIL image(s), (B,)C,H,W tensors or (B,)H,W,C arrays; None when unknown."""
    if isinstance(images, (list, tuple)):
        sides = [largest_side(i) for i in images]
        return max((s for s in sides if s is not None), default=None)
    if hasattr(images, "size") and isinstance(images.size, tuple):  # PIL
        return max(images.size)
    shape = getattr(images, "shape", None)
    if shape is None or len(shape) < 3:
        return None
    if isinstance(images, torch.Tensor):
        return int(max(shape[-2:]))
    return int(max(shape[-3:-1]))  # numpy: H, W, C


def tile_vae_for(pipe, images, native: int | None) -> bool:
    """VAE tiling on when an input side exceeds the model's ``native`` side, off otherwise (outputs at the native
    size stay as they are without it). Returns whether tiling is on."""
    vae = getattr(pipe, "vae", None)
    side = largest_side(images)
    if vae is None or not hasattr(vae, "enable_tiling") or side is None or native is None:
        return False
    tile = side > native
    vae.enable_tiling() if tile else vae.disable_tiling()
    return tile


__all__ = [
    "OFFLOAD_MODES",
    "QUANTIZE_TYPES",
    "MemoryEstimate",
    "MemoryPlanError",
    "apply_offload",
    "check_fits",
    "check_offload",
    "check_quantize",
    "component_bytes",
    "device_memory",
    "largest_side",
    "memory_options",
    "quantization_config",
    "quantized_components",
    "read_safetensors_header",
    "tile_vae_for",
    "weight_files",
]
