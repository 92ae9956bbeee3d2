"""DiffIR's networks as diffusers models (Xia et al., "DiffIR: Efficient Diffusion Model for Image
Restoration", ICCV 2023, arXiv 2303.09472; METHODS.md section 4).

DiffIR restores an image with a transformer (:class:`DIRformer`) that is steered by a compact
*IR prior representation* (IPR) ``Z``, one ``prior_dim``-vector (256 in the paper) per image:

- :class:`CPENS1` (stage 1) compresses (degraded, ground truth) into ``Z``;
- :class:`CPENS2` (stage 2) compresses the degraded image alone into the condition ``D``;
- :class:`PriorDenoiser` is the tiny MLP that predicts ``Z`` (x0-parameterised) from (``D``, t, ``Z_t``);
  a 4-step diffusion on ``Z`` (:class:`lsb.schedulers.DiffIRScheduler`) turns noise into ``Z`` at test time;
- :class:`DIRformer` is a Restormer-style U-shaped transformer whose blocks are *dynamic*: after each
  LayerNorm, inside the dynamic multi-head transposed attention (DMTA) and the dynamic gated
  feed-forward (DGFN), features are modulated by the prior, ``F' = (W1 Z) * F + W2 Z`` with a bias-free
  ``Linear(prior_dim, 2C)`` per module. With ``prior_dim=0`` it is the plain transformer (the no-prior
  ablation).

Sizes are configurable; the defaults fit 64 x 64 RGB images of the shapes world and keep the whole
model well under 2 M parameters (the paper's are ~26 M). Deviations from the paper, all for size:
CPEN channels are ``width, 2 width, 4 width`` (paper: 64, 128, 256) followed by an MLP to ``prior_dim``;
the DIRformer's decoder always reduces the concatenated skip with a 1x1 conv. Same-size tasks (inpainting,
and the world's 4x SR whose degraded image is already upsampled back to 64 x 64) feed the DIRformer the
degraded image pixel-unshuffled by ``unshuffle`` and end in a pixel shuffle plus a global residual to the
degraded RGB. Inpainting inputs carry the hole mask as a 4th channel (``in_channels=4``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


def _check_input(name: str, x: torch.Tensor, channels: int, multiple: int) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"{name}: expected a (B, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    if x.shape[1] != channels:
        raise ValueError(f"{name}: expected {channels} channels, got {x.shape[1]} (input shape {tuple(x.shape)})")
    if x.shape[-1] % multiple or x.shape[-2] % multiple:
        raise ValueError(f"{name}: height and width must be multiples of {multiple}, got {tuple(x.shape[-2:])}")


def _check_prior(name: str, z: torch.Tensor | None, batch: int, prior_dim: int) -> None:
    if prior_dim == 0:
        if z is not None:
            raise ValueError(f"{name}: this model was built without a prior (prior_dim=0) but got one")
        return
    if z is None:
        raise ValueError(f"{name}: this model is modulated by a prior of size {prior_dim}; pass `prior`")
    if z.ndim != 2 or z.shape != (batch, prior_dim):
        raise ValueError(f"{name}: prior must have shape ({batch}, {prior_dim}), got {tuple(z.shape)}")


# ----------------------------------------------------------------------------------------- CPEN
class _ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(F.leaky_relu(self.conv1(x), 0.1))


class _CPEN(nn.Module):
    """Conv -> ResBlocks -> strided convs -> global average pool -> MLP, ending in LeakyReLU(0.1)."""

    def __init__(self, in_ch: int, width: int, n_res: int, prior_dim: int):
        super().__init__()
        lrelu = nn.LeakyReLU(0.1)
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, width, 3, padding=1),
            lrelu,
            *[_ResBlock(width) for _ in range(n_res)],
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            lrelu,
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            lrelu,
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1),
            lrelu,
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.mlp = nn.Sequential(nn.Linear(4 * width, prior_dim), lrelu, nn.Linear(prior_dim, prior_dim), lrelu)

    def forward(self, x):
        return self.mlp(self.body(x))


class CPENS1(ModelMixin, ConfigMixin):
    r"""Stage-1 compact IR prior extraction network: ``Z = CPEN_S1(degraded, clean)``.

    Input: concat(PixelUnshuffle_4(degraded [+ mask]), PixelUnshuffle_4(clean)). Output: the IPR ``Z``
    of shape (B, ``prior_dim``) (non-negative-leaning: it ends in LeakyReLU(0.1), as in the paper).

    Args:
        in_channels: channels of the degraded input (3 RGB, 4 = RGB + inpainting mask).
        width: base channel count (the paper's 64).
        n_res: number of residual blocks (the paper's ``n_encoder_res``).
        prior_dim: size of the IPR (the paper's 4C' = 256).
    """

    @register_to_config
    def __init__(self, in_channels: int = 3, width: int = 24, n_res: int = 1, prior_dim: int = 256):
        super().__init__()
        self.unshuffle = nn.PixelUnshuffle(4)
        self.net = _CPEN((in_channels + 3) * 16, width, n_res, prior_dim)

    def forward(self, degraded: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        _check_input("CPENS1 degraded", degraded, self.config.in_channels, 4)
        _check_input("CPENS1 clean", clean, 3, 4)
        if clean.shape[-2:] != degraded.shape[-2:] or clean.shape[0] != degraded.shape[0]:
            raise ValueError(f"CPENS1: clean {tuple(clean.shape)} and degraded {tuple(degraded.shape)} differ in size")
        return self.net(torch.cat([self.unshuffle(degraded), self.unshuffle(clean)], dim=1))


class CPENS2(ModelMixin, ConfigMixin):
    r"""Stage-2 prior extraction network: the condition ``D = CPEN_S2(degraded)`` of the prior diffusion.

    Same layers as :class:`CPENS1` on PixelUnshuffle_4(degraded [+ mask]) alone; output (B, ``prior_dim``).
    """

    @register_to_config
    def __init__(self, in_channels: int = 3, width: int = 24, n_res: int = 1, prior_dim: int = 256):
        super().__init__()
        self.unshuffle = nn.PixelUnshuffle(4)
        self.net = _CPEN(in_channels * 16, width, n_res, prior_dim)

    def forward(self, degraded: torch.Tensor) -> torch.Tensor:
        _check_input("CPENS2 degraded", degraded, self.config.in_channels, 4)
        return self.net(self.unshuffle(degraded))


# ----------------------------------------------------------------------------------- denoiser
class PriorDenoiser(ModelMixin, ConfigMixin):
    r"""DiffIR's denoising MLP on the IPR, an x0-prediction ``Ẑ0 = f(D, t / (10 T), Z_t)``.

    Input: concat(D, t / (10 T), Z_t), a (2 ``prior_dim`` + 1)-vector; the time is the raw scalar step index
    t in {0, .., T-1} divided by ``10 * num_train_timesteps`` (no sinusoidal embedding, as in the paper).
    Layers: Linear(2 prior_dim + 1 -> prior_dim) + LeakyReLU(0.1), then ``n_res`` x [Linear + LeakyReLU(0.1)]
    (the paper calls them "ResMLP" but they have no skip connection).

    Args:
        prior_dim: size of the IPR Z and of the condition D.
        n_res: number of hidden Linear layers (the paper's ``n_denoise_res``, 1).
        num_train_timesteps: T of the prior diffusion (4), for the time scaling.
    """

    @register_to_config
    def __init__(self, prior_dim: int = 256, n_res: int = 1, num_train_timesteps: int = 4):
        super().__init__()
        lrelu = nn.LeakyReLU(0.1)
        layers = [nn.Linear(2 * prior_dim + 1, prior_dim), lrelu]
        for _ in range(n_res):
            layers += [nn.Linear(prior_dim, prior_dim), lrelu]
        self.mlp = nn.Sequential(*layers)

    def forward(self, sample: torch.Tensor, timestep, condition: torch.Tensor) -> torch.Tensor:
        d = self.config.prior_dim
        if sample.ndim != 2 or sample.shape[1] != d:
            raise ValueError(f"PriorDenoiser: sample must have shape (B, {d}), got {tuple(sample.shape)}")
        if condition.shape != sample.shape:
            raise ValueError(
                f"PriorDenoiser: condition {tuple(condition.shape)} must match sample {tuple(sample.shape)}"
            )
        t = torch.as_tensor(timestep, device=sample.device, dtype=sample.dtype).reshape(-1, 1)
        t = t.expand(sample.shape[0], 1) / (10.0 * self.config.num_train_timesteps)
        return self.mlp(torch.cat([condition, t, sample], dim=1))


# ----------------------------------------------------------------------------------- DIRformer
class _LayerNorm(nn.Module):
    """LayerNorm over channels of a (B, C, H, W) map (Restormer's 'WithBias' variant)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, 1e-5).permute(0, 3, 1, 2)


class _Modulation(nn.Module):
    """F' = (W1 Z) * F + W2 Z, one bias-free Linear(prior_dim, 2C) split into scale and shift."""

    def __init__(self, dim: int, prior_dim: int):
        super().__init__()
        self.kernel = nn.Linear(prior_dim, 2 * dim, bias=False)

    def forward(self, x, z):
        scale, shift = self.kernel(z)[:, :, None, None].chunk(2, dim=1)
        return x * scale + shift


class DMTA(nn.Module):
    """Dynamic multi-head transposed attention: channel (C x C) attention per head on the modulated map."""

    def __init__(self, dim: int, heads: int, prior_dim: int, bias: bool = False):
        super().__init__()
        if dim % heads:
            raise ValueError(f"DMTA: dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.modulation = _Modulation(dim, prior_dim) if prior_dim else None
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=bias)
        self.qkv_dw = nn.Conv2d(3 * dim, 3 * dim, 3, padding=1, groups=3 * dim, bias=bias)
        self.proj = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(self, x, z=None):
        b, c, h, w = x.shape
        if self.modulation is not None:
            x = self.modulation(x, z)
        q, k, v = self.qkv_dw(self.qkv(x)).chunk(3, dim=1)
        q, k, v = (t.reshape(b, self.heads, c // self.heads, h * w) for t in (q, k, v))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)
        return self.proj((attn @ v).reshape(b, c, h, w))


class DGFN(nn.Module):
    """Dynamic gated feed-forward: modulate, Conv1x1 -> DWConv3x3 -> GELU(X1) * X2 -> Conv1x1."""

    def __init__(self, dim: int, expansion: float, prior_dim: int, bias: bool = False):
        super().__init__()
        hidden = int(dim * expansion)
        self.modulation = _Modulation(dim, prior_dim) if prior_dim else None
        self.project_in = nn.Conv2d(dim, 2 * hidden, 1, bias=bias)
        self.dw = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x, z=None):
        if self.modulation is not None:
            x = self.modulation(x, z)
        x1, x2 = self.dw(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class DynamicTransformerBlock(nn.Module):
    """x <- x + DMTA(LN(x), Z);  x <- x + DGFN(LN(x), Z)."""

    def __init__(self, dim: int, heads: int, expansion: float, prior_dim: int, bias: bool = False):
        super().__init__()
        self.norm1, self.attn = _LayerNorm(dim), DMTA(dim, heads, prior_dim, bias)
        self.norm2, self.ffn = _LayerNorm(dim), DGFN(dim, expansion, prior_dim, bias)

    def forward(self, x, z=None):
        x = x + self.attn(self.norm1(x), z)
        return x + self.ffn(self.norm2(x), z)


class _Stage(nn.Module):
    def __init__(self, n: int, dim: int, heads: int, expansion: float, prior_dim: int, bias: bool):
        super().__init__()
        self.blocks = nn.ModuleList(DynamicTransformerBlock(dim, heads, expansion, prior_dim, bias) for _ in range(n))

    def forward(self, x, z):
        for blk in self.blocks:
            x = blk(x, z)
        return x


class DIRformer(ModelMixin, ConfigMixin):
    r"""DiffIR's dynamic restoration transformer (Restormer-shaped U-Net of dynamic transformer blocks).

    ``restored = DIRformer(degraded, prior)``: the degraded image in [-1, 1] (with the hole mask as an extra
    channel for inpainting) is pixel-unshuffled by ``unshuffle``, embedded with a 3x3 conv, passed through
    ``len(num_blocks)`` encoder levels (dims C, 2C, 4C, ...; downsampling = conv + PixelUnshuffle(2)),
    back up through the decoder (conv + PixelShuffle(2), skip concat + 1x1 reduce), ``num_refinement_blocks``
    refinement blocks, an output conv and PixelShuffle, plus a global residual to the degraded RGB.

    Args:
        in_channels: input channels (3 RGB; 4 = RGB + inpainting mask).
        out_channels: output channels (3).
        dim: C, channels of the first level (paper: 48-64).
        num_blocks: dynamic transformer blocks per level (the last is the bottleneck).
        heads: attention heads per level.
        num_refinement_blocks: blocks at the first level after the decoder.
        ffn_expansion_factor: the DGFN's γ.
        unshuffle: pixel-unshuffle factor of the input (1, 2 or 4); the core runs at 1/unshuffle resolution.
        prior_dim: size of the IPR Z that modulates every DMTA and DGFN; 0 builds the plain, prior-free
            transformer (the ablation).
        bias: biases in the attention / feed-forward convolutions.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        dim: int = 24,
        num_blocks=(1, 2, 2),
        heads=(1, 2, 4),
        num_refinement_blocks: int = 1,
        ffn_expansion_factor: float = 2.0,
        unshuffle: int = 2,
        prior_dim: int = 256,
        bias: bool = False,
    ):
        super().__init__()
        num_blocks, heads = list(num_blocks), list(heads)
        if len(num_blocks) != len(heads) or not num_blocks:
            raise ValueError(
                f"DIRformer: num_blocks {num_blocks} and heads {heads} must be non-empty and of equal length"
            )
        if unshuffle not in (1, 2, 4):
            raise ValueError(f"DIRformer: unshuffle must be 1, 2 or 4, got {unshuffle}")
        if out_channels > in_channels:
            raise ValueError("DIRformer: out_channels must not exceed in_channels (global residual to the input)")
        u, levels = unshuffle, len(num_blocks)
        args = dict(expansion=ffn_expansion_factor, prior_dim=prior_dim, bias=bias)
        self.pixel_unshuffle = nn.PixelUnshuffle(u) if u > 1 else nn.Identity()
        self.pixel_shuffle = nn.PixelShuffle(u) if u > 1 else nn.Identity()
        self.embed = nn.Conv2d(in_channels * u * u, dim, 3, padding=1, bias=bias)
        dims = [dim * 2**i for i in range(levels)]
        self.encoders = nn.ModuleList(_Stage(n, d, h, **args) for n, d, h in zip(num_blocks, dims, heads))
        self.downs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(d, d // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2)) for d in dims[:-1]
        )
        self.ups = nn.ModuleList(
            nn.Sequential(nn.Conv2d(d, 2 * d, 3, padding=1, bias=False), nn.PixelShuffle(2)) for d in dims[1:]
        )
        self.reduces = nn.ModuleList(nn.Conv2d(2 * d, d, 1, bias=bias) for d in dims[:-1])
        self.decoders = nn.ModuleList(
            _Stage(n, d, h, **args) for n, d, h in zip(num_blocks[:-1], dims[:-1], heads[:-1])
        )
        self.refinement = _Stage(num_refinement_blocks, dim, heads[0], **args)
        self.output = nn.Conv2d(dim, out_channels * u * u, 3, padding=1, bias=bias)

    @property
    def multiple(self) -> int:
        """Image sides must be multiples of this."""
        return self.config.unshuffle * 2 ** (len(self.config.num_blocks) - 1)

    def forward(self, degraded: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        _check_input("DIRformer degraded", degraded, self.config.in_channels, self.multiple)
        _check_prior("DIRformer", prior, degraded.shape[0], self.config.prior_dim)
        x = self.embed(self.pixel_unshuffle(degraded))
        skips = []
        for i, enc in enumerate(self.encoders):
            x = enc(x, prior)
            if i < len(self.downs):
                skips.append(x)
                x = self.downs[i](x)
        for i in reversed(range(len(self.decoders))):
            x = self.reduces[i](torch.cat([self.ups[i](x), skips[i]], dim=1))
            x = self.decoders[i](x, prior)
        x = self.refinement(x, prior)
        return self.pixel_shuffle(self.output(x)) + degraded[:, : self.config.out_channels]


def count_parameters(*models: nn.Module) -> int:
    return sum(p.numel() for m in models if m is not None for p in m.parameters())


__all__ = [
    "CPENS1",
    "CPENS2",
    "PriorDenoiser",
    "DIRformer",
    "DMTA",
    "DGFN",
    "DynamicTransformerBlock",
    "count_parameters",
]
