"""lsb.io.latents: THE VAE encode/decode, (mode - shift_factor) * scaling_factor, checked against the formula
computed by hand from the VAE's own encoder/decoder, with and without a shift (SD vs SD3/FLUX VAEs)."""

import pytest
import torch
from diffusers.image_processor import VaeImageProcessor

from lsb.io.latents import (
    decode_latents,
    decode_pixels,
    encode_latents,
    latent_shift,
    model_to_vae_latents,
    vae_to_model_latents,
)
from tests.conftest import tiny_vae


def _vae(shift=None, scale=0.7):
    torch.manual_seed(0)
    return tiny_vae((4, 4), sample_size=16, scaling_factor=scale, shift_factor=shift).eval()


@pytest.mark.parametrize("shift", [None, 0.0, 0.25])
def test_encode_decode_apply_scale_and_shift(shift):
    vae = _vae(shift)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        moments = vae.quant_conv(vae.encoder(x)) if vae.quant_conv is not None else vae.encoder(x)
        mean = moments.chunk(2, dim=1)[0]  # the posterior mode of a diagonal Gaussian
        s = 0.0 if shift is None else shift
        expected = (mean - s) * 0.7
        z = encode_latents(vae, x)
        assert latent_shift(vae) == s
        torch.testing.assert_close(z, expected, rtol=0, atol=1e-6)
        dec = decode_pixels(vae, z)
        torch.testing.assert_close(dec, vae.decode(z / 0.7 + s).sample, rtol=0, atol=1e-6)
        torch.testing.assert_close(model_to_vae_latents(vae, vae_to_model_latents(vae, mean)), mean, rtol=0, atol=1e-6)
    proc = VaeImageProcessor(vae_scale_factor=2)
    np_img = decode_latents(vae, proc, z, output_type="np")
    assert np_img.shape == (2, 16, 16, 3) and 0 <= np_img.min() and np_img.max() <= 1
    assert decode_latents(vae, proc, z, output_type="latent") is z


def test_no_shift_is_bit_exact_plain_scaling():
    vae = _vae(None)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        assert torch.equal(encode_latents(vae, x), vae.encode(x).latent_dist.mode() * 0.7)


def test_shift_changes_latents():  # the test can fail: a shift that is ignored gives equal latents
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    assert not torch.allclose(encode_latents(_vae(None), x), encode_latents(_vae(0.5), x))


def test_nonfinite_latents_raise():
    vae = _vae(None)
    with pytest.raises(FloatingPointError, match="NaN/inf"):
        encode_latents(vae, torch.full((1, 3, 16, 16), float("nan")))
