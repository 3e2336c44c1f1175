"""The VAE decoder's "nearest x2 upsample, then 3x3 conv" as four 2x2 convs (same result).

Each output pixel of a 3x3 conv over a nearest-upsampled map sees only 2x2 distinct input
pixels, so the conv's taps can be summed per output phase beforehand: four 2x2 convs on the
small map, interleaved, compute the same values with 4/9 of the multiply-adds. In the SD VAE
decoder those upsample convs are a fifth of all its work (163 of 834 GFLOP saved at
384x288); measured on a 2-core AVX-512 CPU, the decoder runs 1.2x faster in torch and 1.13x
in OpenVINO, and results agree with diffusers' modules to ~1e-6 relative (float rounding).
Applied to the decoder stage, so the torch backend and every export run it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_PHASES = ((0, 0), (0, 1), (1, 0), (1, 1))  # (row, column) parity of the output pixel


def _fold(weight: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Taps (0, 1, 2) of a 3-tap axis as seen by even / odd output pixels: 2 taps each.

    Even outputs read input pixels (i-1, i): taps 0 and 1+2; odd ones (i, i+1): 0+1 and 2.
    """
    t0, t1, t2 = (weight.select(axis, k) for k in range(3))
    return torch.stack([t0, t1 + t2], axis), torch.stack([t0 + t1, t2], axis)


def phase_kernels(weight: torch.Tensor) -> torch.Tensor:
    """[4 * O, I, 2, 2]: a 2x2 kernel per output phase (k = 2a + b: rows k*O to k*O + O)
    from a [O, I, 3, 3] kernel, summed in fp32. Rank 4, as module.to(channels_last) needs."""
    w = weight.float()
    rows = _fold(w, 2)
    return torch.cat([_fold(rows[a], 3)[b] for a, b in _PHASES])


class SubPixelUpsample(torch.nn.Module):
    """Drop-in for diffusers' ``Upsample2D`` (nearest x2 + conv 3x3, padding 1).

    Keeps the original ``conv`` as its only child, so state_dict keys (and weight digests)
    are unchanged; the folded kernels are a non-persistent buffer that follows the module's
    device and dtype (the weights are frozen after loading).
    """

    def __init__(self, conv: torch.nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        with torch.no_grad():
            kernels = phase_kernels(conv.weight).to(conv.weight.dtype)
        self.register_buffer("kernels", kernels, persistent=False)

    @staticmethod
    def fits(module: torch.nn.Module) -> bool:
        """Whether ``module`` is an Upsample2D this class computes exactly."""
        conv = getattr(module, "conv", None)
        return (type(module).__name__ == "Upsample2D" and getattr(module, "use_conv", False)
                and not getattr(module, "use_conv_transpose", True)
                and getattr(module, "interpolate", False) and getattr(module, "norm", 0) is None
                and isinstance(conv, torch.nn.Conv2d) and conv.kernel_size == (3, 3)
                and conv.stride == (1, 1) and conv.padding == (1, 1)
                and conv.dilation == (1, 1) and conv.groups == 1)

    def forward(self, x: torch.Tensor, output_size=None, *args, **kwargs) -> torch.Tensor:
        n, _, h, w = x.shape
        if output_size is not None and tuple(output_size) != (2 * h, 2 * w):
            return self.conv(F.interpolate(x, size=output_size, mode="nearest"))
        o, bias = self.conv.out_channels, self.conv.bias
        padded = F.pad(x, (1, 1, 1, 1))
        outs = [F.conv2d(padded[:, :, a:a + h + 1, b:b + w + 1],
                         self.kernels[k * o:(k + 1) * o], bias)
                for k, (a, b) in enumerate(_PHASES)]
        out = torch.stack(outs, 2)  # [n, o, 4, h, w]; phase k = 2a + b
        out = out.reshape(n, o, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
        return out.reshape(n, o, 2 * h, 2 * w)


def use_subpixel_upsampling(decoder: torch.nn.Module) -> int:
    """Swap every fitting Upsample2D in ``decoder`` for a SubPixelUpsample; how many swapped.

    Idempotent: a decoder already rewritten is left as it is.
    """
    swapped = 0
    for block in getattr(decoder, "up_blocks", []):
        upsamplers = getattr(block, "upsamplers", None)
        if not upsamplers:
            continue
        for i, module in enumerate(upsamplers):
            if SubPixelUpsample.fits(module):
                upsamplers[i] = SubPixelUpsample(module.conv)
                swapped += 1
    return swapped
