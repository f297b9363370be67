"""X-Net must match the official code exactly (its figures: docs/design.md, References: X-Net)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from xnet_core.model import FSM, XBlock, XNet, count_parameters


@pytest.fixture(scope="module")
def xnet() -> XNet:
    torch.manual_seed(0)
    return XNet()


def test_total_trainable_parameters(xnet: XNet) -> None:
    assert count_parameters(xnet) == 15_072_332


def test_bn_buffers_make_the_keras_total(xnet: XNet) -> None:
    running = sum(b.numel() for name, b in xnet.named_buffers() if "running_" in name)
    assert running == 45_314
    assert count_parameters(xnet) + running == 15_117_646


def test_per_stage_parameter_counts(xnet: XNet) -> None:
    assert [count_parameters(m) for m in xnet.encoders] == [10_507, 54_208, 206_720, 806_656, 3_186_176]
    assert count_parameters(xnet.fsm) == 2_395_520
    assert [count_parameters(m) for m in xnet.up_convs] == [4_720_128, 1_180_416, 295_296, 73_920]
    assert [count_parameters(m) for m in xnet.decoders] == [1_601_536, 407_552, 105_472, 28_160]
    assert count_parameters(xnet.head) == 65


def test_seventy_three_l2_kernels_exclude_the_head(xnet: XNet) -> None:
    kernels = xnet.l2_kernels()
    assert len(kernels) == 73
    assert all(k is not xnet.head.weight for k in kernels)
    expected = 1e-5 * sum(float(k.detach().double().pow(2).sum()) for k in kernels)
    assert float(xnet.l2_penalty().detach()) == pytest.approx(expected, rel=1e-5)


def test_keras_batchnorm_settings(xnet: XNet) -> None:
    norms = [m for m in xnet.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.eps == 1e-3 and m.momentum == 0.01 for m in norms)


def test_keras_initialisation_uses_keras_fan_in_for_depthwise(xnet: XNet) -> None:
    depthwise = xnet.encoders[4].body[0][0].weight.detach()  # DW 3x3 over 512 channels
    assert xnet.encoders[4].body[0][0].groups == 512
    keras_std = math.sqrt(2 / (9 * 512))  # truncated normal: sample std = std_param * 0.8796
    assert float(depthwise.std()) == pytest.approx(keras_std, rel=0.05)
    bound = 2 * keras_std / 0.87962566103423978
    assert float(depthwise.abs().max()) <= bound + 1e-6
    assert all(float(m.bias.detach().abs().max()) == 0 for m in xnet.modules() if isinstance(m, nn.Conv2d) and m.bias is not None)
    glorot = math.sqrt(6 / (64 + 1))
    assert float(xnet.head.weight.detach().abs().max()) <= glorot


def test_xblock_structure_has_no_activation_after_the_add() -> None:
    block = XBlock(4, 8).eval()
    x = torch.randn(2, 4, 16, 16)
    with torch.no_grad():
        expected = block.body(x) + block.shortcut(x)
        assert torch.equal(block(x), expected)
    separable = [m for m in block.body if len(m) == 6]
    assert len(separable) == 3  # three distinct separable convs, none shared


@pytest.mark.parametrize("height,width", [(32, 48), (64, 32), (48, 80)])
def test_any_size_divisible_by_16(xnet: XNet, height: int, width: int) -> None:
    xnet.eval()
    with torch.no_grad():
        out = xnet(torch.randn(1, 1, height, width))
    assert out.shape == (1, 1, height, width)
    assert torch.isfinite(out).all()


def test_sizes_not_divisible_by_16_are_refused(xnet: XNet) -> None:
    with pytest.raises(ValueError, match="divisible by 16"):
        xnet(torch.randn(1, 1, 40, 48))


def _fsm_slow(fsm: FSM, x: torch.Tensor) -> torch.Tensor:
    """The FSM formula written out position by position: y_i = sum_j (theta_i . phi_j) / N * g_j."""
    ip = fsm.reduce(x)
    theta, phi, g = fsm.theta(ip), fsm.phi(ip), fsm.g(ip)
    b, e, h, w = theta.shape
    n = h * w
    y = torch.zeros(b, e, h, w, dtype=x.dtype)
    for batch in range(b):
        for i in range(n):
            yi, xi = divmod(i, w)
            acc = torch.zeros(e, dtype=x.dtype)
            for j in range(n):
                yj, xj = divmod(j, w)
                weight = torch.dot(theta[batch, :, yi, xi], phi[batch, :, yj, xj]) / n
                acc += weight * g[batch, :, yj, xj]
            y[batch, :, yi, xi] = acc
    return fsm.expand(ip + fsm.w(y)) + x


@pytest.mark.parametrize("height,width", [(3, 5), (2, 2)])
def test_fsm_equals_an_explicit_loop(height: int, width: int) -> None:
    """Two map sizes: 1/N must come from the feature map, not a constant."""
    torch.manual_seed(3)
    fsm = FSM(64).double().eval()
    for module in fsm.modules():  # non-trivial BN statistics so the check means something
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 64, height, width, dtype=torch.float64)
    with torch.no_grad():
        fast, slow = fsm(x), _fsm_slow(fsm, x)
    assert torch.allclose(fast, slow, atol=1e-10)
