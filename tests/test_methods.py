"""dropblock.methods: draw_mask's spatial dropout (whole channels) beside the other methods."""

from __future__ import annotations

import pytest
import torch

from dropblock.methods import FEATURE_METHODS, METHODS, draw_mask
from stats import assert_can_see_bias, assert_close_se


def test_spatial_dropout_drops_whole_channels_at_rate_p():
    p, shape = 0.3, (4000, 64, 2, 3)
    draw = draw_mask("spatial-dropout", shape, p, generator=torch.Generator().manual_seed(0))
    assert draw.keep.shape == shape and draw.keep.dtype == torch.bool
    assert draw.expected_drop_rate == p and draw.gamma is None and draw.centres is None
    # every channel is all kept or all dropped
    per_channel = draw.keep.reshape(shape[0], shape[1], -1)
    assert torch.equal(per_channel.all(dim=-1), per_channel.any(dim=-1))
    rates = (~draw.keep).reshape(shape[0], -1).double().mean(dim=1)
    mean, se = rates.mean().item(), rates.std().item() / rates.numel() ** 0.5
    assert_close_se(mean, p, se, what="spatial dropout drop rate")
    assert_can_see_bias(p, se)


def test_spatial_dropout_shared_channels_and_p_zero():
    gen = torch.Generator().manual_seed(1)
    shared = draw_mask("spatial-dropout", (64, 8, 3, 3), 0.5, shared_channels=True, generator=gen)
    assert shared.keep.shape == (64, 1, 3, 3)
    assert 0 < (~shared.keep).sum() < shared.keep.numel()  # some whole maps dropped, not all
    none = draw_mask("spatial-dropout", (4, 8, 3, 3), 0.0, generator=gen)
    assert none.keep.all() and none.drop_rate == 0.0


def test_feature_methods_are_the_image_methods_and_spatial_dropout():
    assert set(FEATURE_METHODS) == set(METHODS) | {"spatial-dropout"}
    with pytest.raises(ValueError, match="spatial-dropout"):
        draw_mask("spatial", (1, 1, 4, 4), 0.1)
