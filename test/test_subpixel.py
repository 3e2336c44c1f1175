"""The decoder's sub-pixel upsampling computes what diffusers' Upsample2D computes."""

import copy

import pytest

pytestmark = pytest.mark.needs_torch


@pytest.fixture(scope="module")
def torch():
    import torch

    return torch


def upsample2d(torch, channels, out_channels, bias=True):
    from diffusers.models.upsampling import Upsample2D

    torch.manual_seed(0)
    module = Upsample2D(channels, use_conv=True, out_channels=out_channels, bias=bias)
    return module.eval()


@pytest.mark.parametrize("shape", [(1, 8, 5, 7), (2, 8, 6, 4), (1, 8, 1, 1)])
@pytest.mark.parametrize("bias", [True, False])
def test_equals_nearest_upsample_then_conv(torch, shape, bias):
    from e2e_depth_ros.model.subpixel import SubPixelUpsample

    reference = upsample2d(torch, shape[1], 6, bias)
    assert SubPixelUpsample.fits(reference)
    fast = SubPixelUpsample(reference.conv)
    x = torch.randn(shape)
    with torch.no_grad():
        expected, got = reference(x), fast(x)
    assert got.shape == expected.shape == (shape[0], 6, 2 * shape[2], 2 * shape[3])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_an_explicit_output_size_other_than_twice_falls_back(torch):
    from e2e_depth_ros.model.subpixel import SubPixelUpsample

    reference = upsample2d(torch, 4, 4)
    fast = SubPixelUpsample(reference.conv)
    x = torch.randn(1, 4, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(fast(x, output_size=(9, 11)),
                                   reference(x, output_size=(9, 11)))


def test_other_upsamplers_are_left_alone(torch):
    from diffusers.models.upsampling import Upsample2D

    from e2e_depth_ros.model.subpixel import SubPixelUpsample

    assert not SubPixelUpsample.fits(Upsample2D(4, use_conv=False))
    assert not SubPixelUpsample.fits(Upsample2D(4, use_conv_transpose=True))
    assert not SubPixelUpsample.fits(Upsample2D(4, use_conv=True, kernel_size=5, padding=2))
    assert not SubPixelUpsample.fits(torch.nn.Conv2d(4, 4, 3, padding=1))


def test_the_vae_decoder_gives_the_same_image_and_keeps_its_weights(torch, tiny_depth):
    from e2e_depth_ros.model.backend_torch import load_checkpoint, weights_digest
    from e2e_depth_ros.model.subpixel import SubPixelUpsample, use_subpixel_upsampling

    vae = load_checkpoint(tiny_depth).vae
    original = copy.deepcopy(vae.decoder)
    keys, digest = list(vae.state_dict()), weights_digest(vae)
    expected_swaps = sum(len(b.upsamplers or []) for b in original.up_blocks)
    assert expected_swaps > 0
    assert use_subpixel_upsampling(vae.decoder) == expected_swaps
    assert use_subpixel_upsampling(vae.decoder) == 0  # idempotent
    assert sum(isinstance(m, SubPixelUpsample) for m in vae.decoder.modules()) == expected_swaps
    assert list(vae.state_dict()) == keys and weights_digest(vae) == digest
    z = torch.randn(2, 4, 6, 5)
    with torch.no_grad():
        torch.testing.assert_close(vae.decoder(z), original(z), rtol=1e-4, atol=1e-5)


def test_kernels_follow_the_module_to_another_dtype(torch):
    from e2e_depth_ros.model.subpixel import SubPixelUpsample

    fast = SubPixelUpsample(upsample2d(torch, 4, 4).conv).to(torch.float64)
    assert fast.kernels.dtype == torch.float64
    assert "kernels" not in fast.state_dict()
    assert fast(torch.randn(1, 4, 3, 3, dtype=torch.float64)).dtype == torch.float64
