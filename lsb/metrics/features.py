"""A small feature network for distribution metrics (FID / KID) on the shapes world.

Inception weights cannot be downloaded here, and Inception features say little about 64 x 64 flat
shapes anyway. This CNN is trained (``train_feature_net``) to classify shape, colour and background
of renders under the world's degradations (noise, blur, JPEG, low resolution), and its 128-d
penultimate activations are the feature space of ``fid`` / ``kid``. The trained weights ship with the
package (``lsb/assets/shapes-features.safetensors``, 2.4 MiB; 100% shape/colour/background on clean val renders).

    from lsb.metrics.features import fid, kid
    fid(real_images, fake_images)   # uint8 (N, 64, 64, 3) arrays, PIL images or [0, 1] tensors
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import shapes
from ..io.files import atomic_path

WEIGHTS = Path(__file__).resolve().parents[1] / "assets" / "shapes-features.safetensors"
FEATURE_DIM = 128


class ShapesFeatureNet(nn.Module):
    """Conv net: 64x64 RGB in [0, 1] -> 128-d features (+ shape / colour / background logits)."""

    def __init__(self, width: int = 32, features: int = FEATURE_DIM):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1),
                nn.GroupNorm(8, cout),
                nn.SiLU(),
                nn.Conv2d(cout, cout, 3, padding=1),
                nn.GroupNorm(8, cout),
                nn.SiLU(),
                nn.AvgPool2d(2),
            )

        self.body = nn.Sequential(
            block(3, width), block(width, 2 * width), block(2 * width, 2 * width), block(2 * width, 4 * width)
        )  # 64 -> 4
        self.proj = nn.Linear(4 * width * 16, features)
        self.heads = nn.ModuleDict(
            {
                "shape": nn.Linear(features, len(shapes.SHAPES)),
                "colour": nn.Linear(features, len(shapes.COLOURS)),
                "background": nn.Linear(features, len(shapes.BACKGROUNDS)),
                "geometry": nn.Linear(features, 3),
            }
        )  # cx, cy, size (normalised)
        self.num_features = features  # torchmetrics reads this

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (64, 64):
            x = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
        return self.proj(self.body(x * 2 - 1).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features only (the torchmetrics feature-extractor contract). ``x``: [0, 1] or uint8 images."""
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        return self.features(x)

    def logits(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = F.silu(self.features(x))
        return {k: h(f) for k, h in self.heads.items()}


def _as_tensor(images) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        x = images
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        return x
    arr = np.stack([np.asarray(im, dtype=np.uint8) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0


_CACHE: dict = {}


def load_feature_net(path: str | Path | None = None) -> ShapesFeatureNet:
    from safetensors.torch import load_file

    path = Path(path or WEIGHTS)
    if path not in _CACHE:
        if not path.is_file():
            raise FileNotFoundError(
                f"feature network weights not found at {path}; train them with "
                f"`python -m lsb.metrics.features --out {path}`"
            )
        net = ShapesFeatureNet()
        net.load_state_dict(load_file(str(path)))
        _CACHE[path] = net.eval()
    return _CACHE[path]


@torch.no_grad()
def extract(images, net: ShapesFeatureNet | None = None, batch: int = 256) -> torch.Tensor:
    net = net or load_feature_net()
    x = _as_tensor(images)
    return torch.cat([net(x[i : i + batch]) for i in range(0, len(x), batch)]).double()


def fid(real, fake, net=None) -> float:
    """Fréchet distance between Gaussian fits of the two feature sets."""
    from scipy import linalg

    a, b = extract(real, net).numpy(), extract(fake, net).numpy()
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    try:
        covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    except TypeError:  # scipy >= 1.16 dropped `disp` (the GPU machine's scipy)
        covmean = linalg.sqrtm(s1 @ s2)
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def kid(real, fake, net=None, subsets: int = 20, subset_size: int | None = None, seed: int = 0) -> tuple[float, float]:
    """Kernel inception distance (cubic polynomial kernel, unbiased MMD^2), mean and std over subsets."""
    # float64: the cubic kernel of unnormalised features reaches ~1e6 and the unbiased sums cancel, so
    # float32 leaves errors larger than the distance itself (large negative KIDs)
    a, b = extract(real, net).double().numpy(), extract(fake, net).double().numpy()
    d = a.shape[1]
    m = subset_size or min(len(a), len(b), 100)
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
        mmd = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.mean()
        vals.append(mmd)
    return float(np.mean(vals)), float(np.std(vals))


def _augment(img, rng):
    from ..data import degradations

    k = rng.integers(5)
    if k == 1:
        img = degradations.blur(img, sigma=float(rng.uniform(0.5, 2.0)))
    elif k == 2:
        img = degradations.jpeg(img, quality=int(rng.integers(10, 60)))
    elif k == 3:
        img = degradations.sr4(img)
    arr = np.asarray(img, dtype=np.float32)
    if k == 4 or rng.random() < 0.3:
        arr = arr + rng.normal(0, rng.uniform(2, 15), arr.shape)
    return np.clip(arr, 0, 255)


def train_feature_net(out: str | Path = WEIGHTS, steps: int = 1500, batch: int = 64, seed: int = 0) -> dict:
    """Train the feature network on augmented renders; writes safetensors atomically."""

    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    net = ShapesFeatureNet()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    names = {"shape": list(shapes.SHAPES), "colour": list(shapes.COLOURS), "background": list(shapes.BACKGROUNDS)}
    for step in tqdm(range(steps), desc="feature net"):
        rng = np.random.default_rng([seed, step])
        scenes = [shapes.sample_scene(rng) for _ in range(batch)]
        x = (
            torch.from_numpy(np.stack([_augment(shapes.render(s), rng) for s in scenes])).permute(0, 3, 1, 2).float()
            / 255.0
        )
        out_l = net.logits(x)
        loss = sum(
            F.cross_entropy(out_l[k], torch.tensor([v.index(getattr(s, k)) for s in scenes])) for k, v in names.items()
        )
        geo = torch.tensor([[s.cx / 64, s.cy / 64, s.size / 64] for s in scenes])
        loss = loss + 10 * F.mse_loss(out_l["geometry"], geo)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    # held-out accuracy on clean val renders
    net.eval()
    scenes = shapes.scenes("val", 512)
    with torch.no_grad():
        x = _as_tensor([shapes.render(s) for s in scenes])
        lg = net.logits(x)
    acc = {
        k: float((lg[k].argmax(1) == torch.tensor([v.index(getattr(s, k)) for s in scenes])).float().mean())
        for k, v in names.items()
    }
    out = Path(out)
    with atomic_path(out) as tmp:  # THE atomic write (lsb.io.files)
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp), metadata={"format": "pt"})
    return {"steps": steps, "val_accuracy": acc, "file": str(out)}


if __name__ == "__main__":
    import argparse
    import json

    ap = argparse.ArgumentParser(description="train the shapes-world feature network for FID/KID")
    ap.add_argument("--out", default=str(WEIGHTS))
    ap.add_argument("--steps", type=int, default=1500)
    a = ap.parse_args()
    print(json.dumps(train_feature_net(a.out, a.steps), indent=2))
