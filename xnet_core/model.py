"""X-Net (Qi et al., MICCAI 2019), faithful to the official Keras code.

See docs/design.md, References: X-Net: X-blocks of three separable convolutions plus a 1x1 shortcut,
widths 64..1024, a Feature Similarity Module (dot-product non-local block with 1/N scaling and no
softmax) at the bottleneck, nearest upsampling + a standard 3x3 conv + concat ``[skip, up]`` +
X-block in the decoder, and a 1-channel head. ``forward`` returns logits; ``torch.sigmoid`` of
them are the probabilities Keras computed inside its last layer.

Keras defaults are reproduced: BatchNorm eps 1e-3 / momentum 0.99 (PyTorch ``momentum=0.01``),
truncated he_normal with fan_in = C_in * kh * kw (also for depthwise kernels), glorot_uniform head.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # Keras momentum 0.99 == PyTorch momentum 0.01
KERAS_TRUNC_NORMAL_STD_CORRECTION = 0.87962566103423978
DEFAULT_WIDTHS = (64, 128, 256, 512, 1024)
L2_WEIGHT = 1e-5


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class ConvBNReLU(nn.Sequential):
    """Keras ``conv2d_bn_relu``: conv (with bias) -> BN -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=True),
            _bn(cout),
            nn.ReLU(inplace=True),
        )


class SepConvBNReLU(nn.Sequential):
    """Keras ``depth_conv_bn_relu``: DW3x3 -> BN -> ReLU -> PW1x1 (bias) -> BN -> ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False),
            _bn(cin),
            nn.ReLU(inplace=True),
            nn.Conv2d(cin, cout, 1, bias=True),
            _bn(cout),
            nn.ReLU(inplace=True),
        )


class XBlock(nn.Module):
    """Three separable convs plus a 1x1 conv-BN-ReLU shortcut, joined by a plain add."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.shortcut = ConvBNReLU(cin, cout, 1)
        self.body = nn.Sequential(
            SepConvBNReLU(cin, cout), SepConvBNReLU(cout, cout), SepConvBNReLU(cout, cout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # No activation after the add: the official code has none.
        return self.body(x) + self.shortcut(x)


class FSM(nn.Module):
    """Feature Similarity Module: reduce -> non-local ('dot', 1/N, no softmax) -> expand, + input."""

    def __init__(self, channels: int = 1024) -> None:
        super().__init__()
        inner = channels // 8
        embed = channels // 16
        self.reduce = ConvBNReLU(channels, inner, 3)
        self.theta = nn.Conv2d(inner, embed, 1, bias=False)
        self.phi = nn.Conv2d(inner, embed, 1, bias=False)
        self.g = nn.Conv2d(inner, embed, 1, bias=False)
        self.w = nn.Conv2d(embed, inner, 1, bias=False)
        self.expand = ConvBNReLU(inner, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ip = self.reduce(x)
        b, _, h, w = ip.shape
        n = h * w  # from the actual feature map: the Keras code froze it at 168 (224x192 input)
        theta = self.theta(ip).flatten(2).transpose(1, 2)  # (B, N, E)
        phi = self.phi(ip).flatten(2)  # (B, E, N)
        g = self.g(ip).flatten(2).transpose(1, 2)  # (B, N, E)
        affinity = torch.bmm(theta, phi) / n  # (B, N, N), no softmax
        y = torch.bmm(affinity, g).transpose(1, 2).reshape(b, -1, h, w)
        y = ip + self.w(y)
        return self.expand(y) + x


class XNet(nn.Module):
    """The paper's model: ``XNet()`` is 1 input channel, widths 64..1024, 1 output channel."""

    def __init__(
        self,
        in_channels: int = 1,
        widths: Sequence[int] = DEFAULT_WIDTHS,
        out_channels: int = 1,
        keras_init: bool = True,
    ) -> None:
        super().__init__()
        widths = tuple(widths)
        if len(widths) != 5:
            raise ValueError(f"X-Net has 5 levels; got widths {widths}")
        cins = (in_channels,) + widths[:-1]
        self.encoders = nn.ModuleList(XBlock(ci, co) for ci, co in zip(cins, widths))
        self.fsm = FSM(widths[-1])
        ups, decs = [], []
        for deep, shallow in zip(widths[:0:-1], widths[-2::-1]):
            ups.append(ConvBNReLU(deep, shallow, 3))
            decs.append(XBlock(2 * shallow, shallow))
        self.up_convs = nn.ModuleList(ups)
        self.decoders = nn.ModuleList(decs)
        self.head = nn.Conv2d(widths[0], out_channels, 1)
        if keras_init:
            keras_initialise(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % 16 or w % 16:
            raise ValueError(f"X-Net needs height and width divisible by 16; got {h}x{w}")
        skips = []
        for level, encoder in enumerate(self.encoders):
            if level:
                x = F.max_pool2d(x, 2)
            x = encoder(x)
            skips.append(x)
        x = self.fsm(skips.pop())
        for up_conv, decoder in zip(self.up_convs, self.decoders):
            up = up_conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
            x = decoder(torch.cat([skips.pop(), up], dim=1))  # skip first, as in Keras
        return self.head(x)

    def l2_kernels(self) -> list[torch.Tensor]:
        """The 73 kernels the paper regularises: every conv weight except the head's."""
        return [m.weight for m in self.modules() if isinstance(m, nn.Conv2d) and m is not self.head]

    def l2_penalty(self) -> torch.Tensor:
        """Keras ``l2(1e-5)`` summed over the regularised kernels."""
        return L2_WEIGHT * sum(k.pow(2).sum() for k in self.l2_kernels())


def keras_initialise(model: XNet) -> None:
    """Keras 2.2.4 init: truncated he_normal (fan_in = C_in*kh*kw), zero biases, glorot head."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            if module is model.head:
                nn.init.xavier_uniform_(module.weight)
            else:
                kh, kw = module.kernel_size
                fan_in = module.in_channels * kh * kw  # Keras counts depthwise fan_in as 9*C_in
                std = math.sqrt(2.0 / fan_in) / KERAS_TRUNC_NORMAL_STD_CORRECTION
                nn.init.trunc_normal_(module.weight, 0.0, std, -2 * std, 2 * std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters, as PyTorch's ``parameters()`` counts them."""
    return sum(p.numel() for p in module.parameters())
