"""AdaBN's BatchNorm re-estimation: exact population statistics, nothing else touched."""

from __future__ import annotations

import torch
from torch import nn

from eotransfer.models.batchnorm import batchnorm_layers, reestimate_batchnorm


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(), nn.LazyLinear(2)
    )


def test_statistics_are_those_of_the_target_batches() -> None:
    net = _net()
    net(torch.rand(2, 3, 8, 8))  # materialise the lazy layer
    a, b = torch.randn(5, 3, 8, 8) * 3 + 7, torch.randn(5, 3, 8, 8) * 0.5 - 2
    with torch.no_grad():
        za, zb = net[0](a), net[0](b)  # what the BatchNorm layer sees
    seen = reestimate_batchnorm(net, [a, b])
    bn = net[1]
    assert seen == 10
    expected_mean = torch.cat([za, zb]).mean((0, 2, 3))  # equal batches: the cumulative average is the pooled mean
    expected_var = (za.var((0, 2, 3), unbiased=True) + zb.var((0, 2, 3), unbiased=True)) / 2
    assert torch.allclose(bn.running_mean, expected_mean, atol=1e-5)
    assert torch.allclose(bn.running_var, expected_var, atol=1e-4)
    assert int(bn.num_batches_tracked) == 2


def test_order_does_not_matter_and_weights_mode_and_momentum_are_kept() -> None:
    net = _net()
    net(torch.rand(2, 3, 8, 8))
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    a, b = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8) + 1
    reestimate_batchnorm(net, [a, b])
    first = net[1].running_mean.clone()
    reestimate_batchnorm(net, [b, a])
    assert torch.allclose(net[1].running_mean, first, atol=1e-6)
    after = net.state_dict()
    for k, v in before.items():
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(after[k], v), k  # no weight changes
    assert not torch.allclose(after["1.running_mean"], before["1.running_mean"])
    assert net.training and net[1].momentum == 0.1


def test_single_images_are_skipped_and_an_unusable_target_keeps_the_source_statistics() -> None:
    net = _net()
    net.eval()
    net[1].running_mean.fill_(3.0)
    assert reestimate_batchnorm(net, [torch.rand(1, 3, 8, 8)]) == 0
    assert torch.allclose(net[1].running_mean, torch.full((4,), 3.0)) and not net.training


def test_a_model_without_batchnorm_is_untouched() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.LayerNorm([4, 6, 6]))
    assert batchnorm_layers(net) == [] and reestimate_batchnorm(net, [torch.rand(4, 3, 8, 8)]) == 0
