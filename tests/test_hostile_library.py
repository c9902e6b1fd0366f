"""Hostile inputs at the library's edges (issue 18: W2, T1-T4), one family per section, with variants.

Each test's docstring names the defense whose removal makes it fail.
"""

from __future__ import annotations

import copy
import math
import os
import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from conftest import EVERY_PATH
from dropblock import (
    Cutout,
    DropBlock2d,
    Dropout,
    ScheduledDropBlock2d,
    SpatialDropout2d,
    add_dropblock,
    dropblock_mask,
    measure_dropblock,
    measure_function,
)
from dropblock.audit import audit_gamma
from dropblock.functional import cutout, drop_block2d, dropout, spatial_dropout
from dropblock.rng import make_generator

# --- W2: double backward ----------------------------------------------------------------------------

VARIANTS = {
    "batch": {}, "sample": {"rescale": "sample"}, "expected": {"rescale": "expected"}, "none": {"rescale": "none"},
    "shared": {"shared_channels": True}, "full-plane": {"block_size": 9},
}
"""Keyword sets that reach each branch: the sparse per-channel path (batch, expected, none), the dense
mask (sample, shared), and the (N, C, 1, 1) mask of blocks that cover the whole plane."""


def _seeded(block_size: int = 3, **kwargs):
    """x -> drop_block2d(x, 0.4, block_size, seed=0, **kwargs): the same mask at every call, so a linear map."""
    return lambda x: drop_block2d(x, 0.4, block_size, seed=0, **kwargs)


def _x(device, shape=(2, 3, 4, 5), channels_last=False) -> torch.Tensor:
    x = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5)).to(device)
    return (x.contiguous(memory_format=torch.channels_last) if channels_last else x).requires_grad_()


def _assert_draw_drops_and_keeps(f, x) -> None:
    """The mask f applies drops some units and keeps others: a check on it checks something."""
    y = f(torch.ones_like(x.detach()))
    assert (y == 0).any() and (y != 0).any()


@EVERY_PATH
@pytest.mark.parametrize("variant", VARIANTS)
def test_gradgradcheck_passes_on_every_path(backend, variant):
    """Second-order gradients of drop_block2d in float64 are right on each backend and branch (Triton in
    gradgradcheck's fast mode: its interpreter is slow). Fails if ``_engine._ZeroBlocks.backward`` or
    ``_triton._DropBlock.backward`` is ``once_differentiable`` again ("trying to differentiate twice"),
    or if a backward pass applied another mask than its forward's."""
    f = _seeded(**VARIANTS[variant])
    x = _x(backend)
    _assert_draw_drops_and_keeps(f, x)
    assert torch.autograd.gradgradcheck(f, (x,), fast_mode=_on_triton())


def _on_triton() -> bool:
    return os.environ.get("DROPBLOCK_BACKEND") == "triton"


@EVERY_PATH
@pytest.mark.parametrize("layout", ["channels_last", "inplace"])
def test_gradgradcheck_on_other_layouts_and_in_place(backend, layout):
    """A channels-last input (the dense-mask branch) and an in-place call on a non-leaf (autograd's own
    in-place fill) are twice differentiable too. Fails if either branch stops recording its mask for
    autograd, or if the in-place fill bypasses torch while x is tracked."""
    if layout == "inplace":
        def f(x):
            return drop_block2d(x * 1.0, 0.4, 3, True, seed=0)
    else:
        f = _seeded()
    x = _x(backend, channels_last=layout == "channels_last")
    _assert_draw_drops_and_keeps(f, x)
    assert torch.autograd.gradgradcheck(f, (x,), fast_mode=_on_triton())


@EVERY_PATH
def test_the_second_order_term_is_kept_when_x_is_used_twice(backend):
    """f(x) = sum(drop(x) * x) = sum(m * x^2) for the draw's scaled mask m, so its Hessian is diag(2m):
    a Hessian-vector product must give 2 m v. With a once-differentiable backward, this either raises
    or (where the other use of x carries a graph) silently loses the term through DropBlock."""
    f = _seeded()
    x = _x(backend)
    m = f(torch.ones_like(x.detach()))
    (grad,) = torch.autograd.grad((f(x) * x).sum(), x, create_graph=True)
    v = torch.rand_like(x.detach())
    (hvp,) = torch.autograd.grad(grad, x, v)
    torch.testing.assert_close(hvp, 2 * m * v)


def test_the_module_the_traced_op_and_the_other_regularizers_differentiate_twice():
    """DropBlock2d, the custom op that traced calls become (run eagerly from a fixed torch.manual_seed,
    the RNG state restored after), dropout, spatial dropout and Cutout all pass gradgradcheck. Fails if
    any of their backward passes becomes once-differentiable (the op's: if its registered backward
    stopped calling the differentiable replay op)."""
    x = _x("cpu", (2, 3, 6, 6))

    def module(t):
        return DropBlock2d(0.4, 3, seed=0)(t)

    def op(t):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return torch.ops.dropblock.drop_block2d(t, 0.4, 3, "paper", 0.0, "batch", False, 1e-6)[0]

    def gen():
        return make_generator(0, "cpu")

    others = [lambda t: dropout(t, 0.4, generator=gen()), lambda t: spatial_dropout(t, 0.4, generator=gen()),
              lambda t: cutout(t, 1, 3, generator=gen())]
    for f in (module, op, *others):
        _assert_draw_drops_and_keeps(f, x)
        assert torch.autograd.gradgradcheck(f, (x,))


# --- T1: tensor subclasses ---------------------------------------------------------------------------


class Plain(torch.Tensor):
    """A subclass that changes nothing (``as_subclass``): it holds data like any tensor."""


class Counting(torch.Tensor):
    """A subclass with its own ``__torch_function__`` (counts the torch calls it sees)."""

    calls = 0

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.calls += 1
        return super().__torch_function__(func, types, args, kwargs or {})


@EVERY_PATH
@pytest.mark.parametrize("cls", [Plain, Counting])
def test_a_tensor_subclass_runs_eagerly_with_a_seed(backend, cls):
    """A subclass holding data is not "being traced": seed= works and gives the plain tensor's mask,
    and the result keeps the subclass (as torch ops, and torchvision's drop_block2d, keep it). Fails if
    ``_engine.tracing`` again takes every type but Tensor and Parameter for a trace (the TRACED_RNG error)."""
    x = torch.rand(2, 3, 8, 8, device=backend)
    expect = drop_block2d(x, 0.3, 3, seed=0)
    for y in (drop_block2d(x.as_subclass(cls), 0.3, 3, seed=0), DropBlock2d(0.3, 3, seed=0)(x.as_subclass(cls))):
        assert type(y) is cls
        assert torch.equal(y.as_subclass(torch.Tensor), expect) and (expect == 0).any()


@EVERY_PATH
def test_a_subclass_that_requires_grad_gets_the_masked_gradient(backend):
    """Gradients reach a subclass input through the eager path: the masked (scaled) upstream gradient.
    Fails if a subclass is sent down the traced path (whose mask would come from another generator)
    or loses its autograd graph."""
    x = torch.rand(2, 3, 8, 8, device=backend).as_subclass(Plain).requires_grad_()
    y = drop_block2d(x, 0.3, 3, seed=0)
    y.sum().backward()
    m = drop_block2d(torch.ones(2, 3, 8, 8, device=backend), 0.3, 3, seed=0)
    torch.testing.assert_close(x.grad.as_subclass(torch.Tensor), m)


# --- T2: meta tensors --------------------------------------------------------------------------------

META_CALLS = {
    "drop_block2d": lambda x: drop_block2d(x, 0.3, 3),
    "seed": lambda x: drop_block2d(x, 0.3, 3, seed=1, rescale="sample", shared_channels=True),
    "module": lambda x: DropBlock2d(0.3, 3, seed=0)(x),
    "scheduled": lambda x: ScheduledDropBlock2d(0.3, 3, steps=1, start_keep_prob=0.5)(x),
    "dropout": lambda x: Dropout(0.3)(x),
    "spatial": lambda x: SpatialDropout2d(0.3)(x),
    "cutout": lambda x: Cutout(1, 4)(x),
}


@pytest.mark.parametrize("call", META_CALLS)
def test_meta_in_meta_out(call):
    """A meta tensor (no data) gives a new meta tensor of its shape and dtype, with autograd, as
    torchvision's drop_block2d does. Fails without the meta branch: the seed lists try to read a
    draw back to the host ("Cannot copy out of meta tensor"), and a seed tries a meta generator."""
    x = torch.empty(2, 3, 8, 8, device="meta", dtype=torch.float16, requires_grad=True)
    y = META_CALLS[call](x)
    assert (y.device.type, y.shape, y.dtype) == ("meta", x.shape, x.dtype) and y is not x
    y.sum().backward()
    assert x.grad.device.type == "meta" and x.grad.shape == x.shape


def test_meta_in_place_returns_the_input_and_a_model_on_meta_runs():
    """In place, the meta input itself comes back; a whole model with add_dropblock moved to the meta
    device runs its forward pass (shape inference, no memory). Fails without the meta branch, or if
    the in-place meta call returned a new tensor."""
    x = torch.empty(2, 3, 8, 8, device="meta")
    assert drop_block2d(x, 0.3, 3, True) is x
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1)).train()
    add_dropblock(model, ["0", "1"], p=0.2, block_size=3, seed=0)
    y = model.to("meta")(x)
    assert y.device.type == "meta" and y.shape == (2, 4, 8, 8)


# --- T3: eps and seeds -------------------------------------------------------------------------------

BAD_EPS = [0, 0.0, -1e-6, math.nan, math.inf, "1e-6", None, True]
EPS_CALLS = {
    "drop_block2d": lambda eps: drop_block2d(torch.rand(1, 2, 6, 6), 0.5, 3, eps=eps, gamma=1.0),
    "DropBlock2d": lambda eps: DropBlock2d(0.1, 3, eps=eps),
    "ScheduledDropBlock2d": lambda eps: ScheduledDropBlock2d(0.1, 3, steps=10, eps=eps),
    "add_dropblock": lambda eps: add_dropblock(nn.Sequential(nn.Conv2d(3, 3, 1)), "0", eps=eps),
}


@pytest.mark.parametrize("call", EPS_CALLS)
@pytest.mark.parametrize("eps", BAD_EPS, ids=repr)
def test_eps_must_be_a_finite_positive_number(call, eps):
    """eps = 0 with every unit dropped (gamma 1) divided by zero; negative, NaN or infinite eps makes the
    rescale meaningless. Every public entry point that takes eps refuses them with a ValueError naming
    eps and quoting the value. Fails without ``check_eps`` at that entry point (a ZeroDivisionError, or
    a module that fails only later in training)."""
    with pytest.raises(ValueError, match=rf"^eps must be a finite number > 0 \(e\.g\. 1e-6\), got {re_quote(eps)}$"):
        EPS_CALLS[call](eps)


def re_quote(value) -> str:
    return re.escape(repr(value))


@EVERY_PATH
@pytest.mark.parametrize("variant", ["batch", "sample", "expected", "shared", "shared-expected", "full-plane"])
def test_a_tiny_eps_with_everything_dropped_gives_zeros_not_nan(backend, variant):
    """With gamma 1 every unit is dropped; eps = 1e-320 makes numel / (eps + 0) and 1 / eps infinite. The
    output must be all zeros, never NaN (0 * inf), its gradient too, with no warning. Fails (NaN) on the
    dense-mask branch without the nothing-kept guard (scale 0 for a group that keeps nothing) in
    ``_engine._rescale_mask``, or without Plan.expected_scale 0 when the expected drop rate is 1
    (shared-expected); on Triton's interpreter (a RuntimeWarning from inf * 0) without the guard in
    ``_triton._rescale``. The sparse branch zero-fills over any scale, so it holds either way."""
    kwargs = {"block_size": 3, **VARIANTS.get(variant, {"rescale": "expected", "shared_channels": True})}
    x = torch.rand(2, 3, 6, 6, device=backend, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = drop_block2d(x, 0.5, eps=1e-320, gamma=1.0, **kwargs)
        y.sum().backward()
    assert torch.equal(y, torch.zeros_like(y)) and torch.equal(x.grad, torch.zeros_like(x))


BAD_SEEDS = [2**70, 2**64, -1, -(2**63), 1.5, "3", True]
SEED_CALLS = {
    "drop_block2d": lambda s: drop_block2d(torch.rand(1, 2, 6, 6), 0.3, 3, seed=s),
    "drop_block2d-meta": lambda s: drop_block2d(torch.empty(1, 2, 6, 6, device="meta"), 0.3, 3, seed=s),
    "DropBlock2d": lambda s: DropBlock2d(0.1, 3, seed=s),
    "ScheduledDropBlock2d": lambda s: ScheduledDropBlock2d(0.1, 3, steps=10, seed=s),
    "dropblock_mask": lambda s: dropblock_mask((1, 1, 6, 6), 0.3, 3, seed=s),
    "add_dropblock": lambda s: add_dropblock(nn.Sequential(nn.Conv2d(3, 3, 1)), "0", seed=s),
    "measure_dropblock": lambda s: measure_dropblock(0.1, 3, 8, 8, samples=2, seed=s),
    "measure_function": lambda s: measure_function(lambda x: x, 0.1, 3, 8, 8, samples=2, seed=s),
    "audit_gamma": lambda s: audit_gamma(0.1, 3, 8, 8, samples=2, seed=s),
    "make_generator": lambda s: make_generator(s, "cpu"),
}


@pytest.mark.parametrize("call", SEED_CALLS)
@pytest.mark.parametrize("seed", BAD_SEEDS, ids=repr)
def test_seeds_outside_64_bits_are_refused(call, seed):
    """A seed must be an integer in [0, 2**64 - 1]: torch keeps 64 bits, so 2**70 overflowed ("Overflow
    when unpacking long long") and -1 silently meant 2**64 - 1. Every public entry point that takes a
    seed gives a ValueError naming it and quoting the value. Fails without ``check_seed`` at that entry
    point (an OverflowError or ValueError from torch, a silently aliased seed, or a module that fails
    only at its first forward)."""
    with pytest.raises(ValueError, match=rf"^seed must be an integer in \[0, 2\*\*64 - 1\], got {re_quote(seed)}$"):
        SEED_CALLS[call](seed)


@pytest.mark.parametrize("seed", [0, 2**64 - 1, np.uint64(2**64 - 1), np.int8(3), torch.tensor(7)], ids=repr)
def test_every_64_bit_seed_works(seed):
    """The whole range, and integer NumPy and torch scalars, are seeds. Fails if the check were
    narrower than torch's generator (e.g. int64 only) or refused integer scalars."""
    a = drop_block2d(torch.ones(1, 2, 8, 8), 0.3, 3, seed=seed)
    assert torch.equal(a, drop_block2d(torch.ones(1, 2, 8, 8), 0.3, 3, seed=int(seed)))


def test_add_dropblock_refuses_a_seed_whose_later_blocks_overflow():
    """The i-th DropBlock gets seed + i: with 3 targets, 2**64 - 3 is the largest seed. Fails without the
    range check in add_dropblock (the third DropBlock's seed would overflow at its first forward)."""
    def model():
        return nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU(), nn.Conv2d(3, 3, 1))

    blocks = add_dropblock(model(), ["0", "1", "2"], seed=2**64 - 3)
    assert [b.seed for b in blocks] == [2**64 - 3, 2**64 - 2, 2**64 - 1]
    with pytest.raises(ValueError, match=r"^seed must be at most 2\*\*64 - 3 for 3 DropBlocks"):
        add_dropblock(model(), ["0", "1", "2"], seed=2**64 - 2)


# --- T4: add_dropblock's targets ---------------------------------------------------------------------


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 1))


@pytest.mark.parametrize("layers", ["*", "", ["0", "*"], "**"], ids=repr)
def test_a_pattern_matching_the_root_is_refused(layers):
    """The root (name "") is the whole model: a DropBlock "after" it is not what "*" means, and "*" would
    also put one after every module. Refused with a ValueError naming the pattern, before anything is
    inserted. Fails without the root check in resolve_targets ("*" inserts after every module)."""
    model = _net()
    before = [n for n, _ in model.named_modules()]
    with pytest.raises(ValueError, match=r"^layer pattern '\**' matches the root module"):
        add_dropblock(model, layers)
    assert [n for n, _ in model.named_modules()] == before


class Pair(nn.Module):
    """Returns a tuple, as attention blocks and RNNs do."""

    def forward(self, x):
        return x, x.mean()


class Holder(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.inner = inner

    def forward(self, x):
        out = self.inner(self.stem(x))
        return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("inner, name, what", [
    (lambda: nn.Sequential(Pair()), "inner.0", "input must be a torch.Tensor, got tuple"),
    (lambda: nn.Sequential(nn.Conv2d(4, 4, 1), Pair()), "inner", "input must be a torch.Tensor, got tuple"),
    (lambda: nn.Sequential(nn.Flatten()), "inner.0", r"input must be 4-D \(N, C, H, W\), got shape \(2, 256\)"),
    (lambda: nn.Sequential(nn.Identity()), "inner.0", "input must be a floating tensor, got dtype torch.int64"),
], ids=["tuple", "sequential-ending-in-a-tuple", "2-D", "integers"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_a_module_whose_output_is_not_one_map_is_named_at_the_first_forward(inner, name, what, mode):
    """A hooked module returning a tuple, a Sequential (the DropBlock appended) ending in one, a module
    returning a 2-D tensor, and an integer map: the first forward pass fails with one line that names
    the module path, in train and eval mode (a misplaced DropBlock is a bug either way). Fails without
    the pre-hook ``_check_what_reaches`` (a tuple went through unnoticed in eval and failed deep in
    torch, or with no module named, in training)."""
    model = Holder(inner())
    add_dropblock(model, name, block_size=3)
    getattr(model, mode)()
    x = torch.rand(2, 3, 8, 8)
    if "int64" in what:
        model.stem = nn.Sequential()  # the identity: integers reach the DropBlock
        x = torch.randint(0, 5, (2, 3, 8, 8))
    with pytest.raises(ValueError, match=rf"^the DropBlock that add_dropblock put after '{name}' cannot take "
                                         rf"what reaches it: {what}; pick a module") as exc:
        model(x)
    assert "\n" not in str(exc.value)


def test_the_check_survives_a_deep_copy_and_a_saved_model(tmp_path):
    """The check travels with the model: a deep copy, and a whole model saved with torch.save and loaded,
    still name the module. Fails if the hook were a closure or lambda (torch.save cannot pickle it) or
    if the check lived outside the model."""
    model = Holder(nn.Sequential(Pair()))
    add_dropblock(model, "inner.0", block_size=3)
    torch.save(model, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=False)
    for m in (copy.deepcopy(model), loaded):
        with pytest.raises(ValueError, match=r"put after 'inner\.0' cannot take"):
            m(torch.rand(1, 3, 8, 8))


@pytest.mark.parametrize("make", [lambda: nn.LSTM(4, 4), lambda: nn.GRU(4, 4), lambda: nn.MultiheadAttention(4, 1)],
                         ids=["LSTM", "GRU", "MultiheadAttention"])
def test_a_module_known_to_return_a_tuple_is_refused_when_inserted(make):
    """RNNs and attention return tuples whatever their input: refused at add_dropblock, naming the module,
    and nothing is inserted. Fails without the insert-time type check (it would fail only at the first
    forward)."""
    module = make()
    model = nn.Sequential(nn.Conv2d(3, 4, 1), module)
    with pytest.raises(ValueError, match=rf"^cannot put a DropBlock after 1: a {type(module).__name__} returns a "
                                         r"tuple, not one tensor"):
        add_dropblock(model, "1")
    assert not hasattr(module, "dropblock") and not module._forward_hooks


def test_a_refused_target_leaves_the_whole_model_as_it_was():
    """Every target is checked before any DropBlock goes in: when the second of two targets is refused
    (an LSTM, a ModuleList, one that already has a DropBlock), the first gets none either. Fails if
    targets were checked one by one while inserting (the model would be left half-modified)."""
    for second in (nn.LSTM(4, 4), nn.ModuleList([nn.ReLU()]), "again"):
        model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 4, 1))
        if second == "again":
            add_dropblock(model, "2", block_size=3)
        else:
            model[2] = second
        state = (sorted(model.state_dict()), [n for n, _ in model.named_modules()])
        with pytest.raises(ValueError):
            add_dropblock(model, ["0", "2"], block_size=3)
        assert (sorted(model.state_dict()), [n for n, _ in model.named_modules()]) == state
        assert not model[0]._forward_hooks


def test_an_empty_slot_names_itself():
    """A DropBlock put in an empty slot (a residual block's missing downsample) checks what reaches it
    too, and says it sits in that slot. Fails without the pre-hook on slot DropBlocks."""
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.downsample = None

        def forward(self, x):
            short = x if self.downsample is None else self.downsample(x.flatten(1))
            return self.conv(x) + short.view_as(x)

    model = Block()
    add_dropblock(model, "downsample", block_size=3)
    with pytest.raises(ValueError, match=r"^the DropBlock that add_dropblock put in the empty slot 'downsample' "
                                         r"cannot take what reaches it: input must be 4-D"):
        model(torch.rand(1, 3, 4, 4))
