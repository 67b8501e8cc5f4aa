"""Networks: the small CNN keeps a 4 x 4 pooled grid at every input size."""

from __future__ import annotations

import pytest
import torch

from xbench.errors import ConfigError
from xbench.networks import featurizer, small_cnn


@pytest.mark.parametrize("size, convs", [(16, 3), (32, 4), (64, 5)])
def test_small_cnn_adds_a_stride_two_block_per_doubling(size, convs):
    net = small_cnn(3, size=size)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in net) == convs
    grid = torch.nn.Sequential(*list(net)[:-2])(torch.zeros(2, 3, size, size))  # before pooling
    assert grid.shape == (2, 64, 4, 4)
    assert net(torch.zeros(2, 3, size, size)).shape == (2, net.n_outputs)


def test_featurizer_sizes_the_cnn_from_the_input_shape():
    assert sum(isinstance(m, torch.nn.Conv2d) for m in featurizer((1, 16, 16))) == 3
    assert sum(isinstance(m, torch.nn.Conv2d) for m in featurizer((3, 32, 32))) == 4
    assert featurizer((1, 40)).n_outputs == 64 and featurizer((3, 32, 32), width=16).n_outputs == 16


def test_unknown_arch_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown network arch 'vgg'"):
        featurizer((3, 32, 32), arch="vgg")
