import io

import pytest
import torch
from torch import nn

from dropblock import Cutout, DropBlock2d, Dropout, ScheduledDropBlock2d, SpatialDropout2d


def test_dropblock2d_is_a_drop_in_for_torchvisions_signature():
    m = DropBlock2d(0.1, 7, False, 1e-6)
    assert (m.p, m.block_size, m.inplace, m.eps) == (0.1, 7, False, 1e-6)
    assert "block_size=7" in repr(m)


def test_eval_mode_and_p_zero_are_the_identity():
    x = torch.rand(2, 4, 14, 14) + 0.1
    m = DropBlock2d(0.3, 5).eval()
    assert m(x) is x
    assert DropBlock2d(0.0, 5)(x) is x
    for mod in (Dropout(0.3), SpatialDropout2d(0.3), Cutout(1, 4)):
        assert mod.eval()(x) is x


def test_training_mode_drops_and_gradients_flow_through_a_network():
    """Inside a network in training, DropBlock2d zeroes whole 3 x 3 blocks of its input, scales every
    kept unit by numel / (eps + kept), and its input's gradient is the upstream gradient through the
    same mask and scale; the first conv still gets a gradient. Breaking it: a forward that returns its
    input (nothing dropped), drops scattered units instead of blocks, forgets the rescale, or a
    backward that passes the gradient unmasked or unscaled."""
    from conftest import assert_blocks_of_valid_seeds

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), DropBlock2d(0.2, 3, seed=0), nn.Conv2d(8, 1, 1)).train()
    seen = {}

    def keep(module, args, out):
        args[0].retain_grad()
        out.retain_grad()
        seen.update(before=args[0], after=out)

    net[1].register_forward_hook(keep)
    net(torch.rand(2, 3, 16, 16)).sum().backward()
    before, after = seen["before"], seen["after"]
    dropped = after == 0
    assert dropped.any() and not dropped.all() and not (before == 0).any()
    assert_blocks_of_valid_seeds(dropped, 3, 3)
    scale = dropped.numel() / (1e-6 + float((~dropped).sum()))
    torch.testing.assert_close(after, before * ~dropped * scale)
    torch.testing.assert_close(before.grad, after.grad * ~dropped * scale)
    assert net[0].weight.grad is not None and net[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("args, kwargs, match", [
    ((1.2, 3), {}, r"^p must be in \[0, 1\), got 1.2"),
    ((0.1, 0), {}, r"^block_size must be an integer >= 1, got 0"),
    ((0.1, "7"), {}, r"^block_size must be an integer >= 1, got '7'"),
    ((0.1, 3), {"gamma": "median"}, r"^gamma must be 'paper', 'exact' or a probability in \[0, 1\], got 'median'"),
    ((0.1, 3), {"gamma": -0.1}, r"^gamma must be 'paper', 'exact' or a probability in \[0, 1\], got -0.1"),
    ((0.1, 3), {"rescale": "mean"}, r"^rescale must be one of batch, sample, expected, none; got 'mean'"),
])
def test_bad_constructor_arguments(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        DropBlock2d(*args, **kwargs)


def test_forward_checks_the_input():
    with pytest.raises(ValueError, match=r"^input must be 4-D \(N, C, H, W\), got shape \(4, 14, 14\)"):
        DropBlock2d(0.1, 3)(torch.rand(4, 14, 14))


def test_schedule_is_linear_from_one_to_the_target():
    m = ScheduledDropBlock2d(0.1, 7, steps=100)
    assert m.keep_prob == 1.0
    x = torch.rand(1, 2, 14, 14) + 0.1
    assert m(x) is x  # keep_prob 1 at step 0: nothing dropped
    for _ in range(50):
        m.step()
    assert m.keep_prob == pytest.approx(0.95)
    for _ in range(100):
        m.step()
    assert m.keep_prob == pytest.approx(0.9)


def test_schedule_state_survives_state_dict():
    m = ScheduledDropBlock2d(0.1, 7, steps=1000)
    for _ in range(123):
        m.step()
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    fresh = ScheduledDropBlock2d(0.1, 7, steps=1000)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert int(fresh.step_count) == 123 and fresh.keep_prob == m.keep_prob
    assert "step_count" in m.state_dict()


def test_seed_or_generator_makes_a_module_reproducible_across_instances():
    x = torch.rand(2, 4, 14, 14) + 0.1
    a, b = DropBlock2d(0.2, 3, seed=5), DropBlock2d(0.2, 3, seed=5)
    first, second = a(x), a(x)
    assert torch.equal(first, b(x)) and torch.equal(second, b(x))
    assert not torch.equal(first, second)  # the generator advances between calls
    assert torch.equal(DropBlock2d(0.2, 3, generator=torch.Generator().manual_seed(5))(x), first)
    with pytest.raises(ValueError, match="not both"):
        DropBlock2d(0.2, 3, seed=1, generator=torch.Generator())
