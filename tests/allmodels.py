"""Checks that every model of a zoo gets (tests/test_models_all_torchvision.py and _timm.py).

A model is built on the CPU from a fixed seed with random weights, its BatchNorm statistics taken
from one batch (:func:`calibrated`), and its state dict saved as a ``.pth`` that the CLI reads.
Each check compares the library with an independent reference: plain forward hooks.
"""

from __future__ import annotations

import copy
import json
import random
import zlib
from pathlib import Path

import torch
from torch import nn

import dropblock.models as M
from dropblock.shared_pass import forward_group
from clirun import run
from edits import hooked_logits, masker

IMAGE = Path(__file__).resolve().parents[1] / "sample_images" / "coffee.jpg"
EDITS = 4


def revived(model: nn.Module) -> nn.Module:
    """``model`` with every weight that starts at (about) zero given values of order one: ViT's zero
    head, timm's zero-init last BatchNorm of each residual block, NFNet's zero skip gains, ConvNeXt's
    1e-6 layer scales. With them, edits inside those branches could not show in the logits (a ViT's
    logits are 0 whatever the input). Scales and gains become 1; matrices U(-1, 1) / sqrt(fan-in)."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or not p.is_floating_point() or not p.numel() or p.abs().max() >= 1e-3:
                continue
            if p.ndim <= 1:
                p.fill_(1.0)
            else:
                bound = p[0].numel() ** -0.5
                p.copy_(torch.rand(p.shape, generator=g) * 2 * bound - bound)
    return model


def calibrated(model: nn.Module, side: int) -> nn.Module:
    """``model`` (:func:`revived`) in eval mode with every BatchNorm's running statistics from one
    batch of eight seeded random (3, side, side) images, the rest of the model in eval mode (no
    auxiliary heads). With the statistics of a fresh init the activations of many random-init
    networks vanish (googlenet's logits are then its bias whatever the input), and no edit could
    show in the logits. Fewer images make some networks chaotic (efficientnet_b6 with two: the
    float noise of batched kernels moves its logits by 50%)."""
    model = revived(model).eval()
    norms = [m for m in model.modules()
             if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)) and m.track_running_stats]
    if norms:
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: the one batch sets the statistics
            m.train()
        x = torch.randn(8, 3, side, side, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            model(x)
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
    return model.eval()


def hooked_table(model: nn.Module, side: int) -> dict[str, tuple[tuple[int, ...], int]]:
    """{name: ((C, H, W), calls)} of every submodule whose first output for a zero
    (1, 3, side, side) image is a 4-D tensor, recorded with plain forward hooks."""
    first: dict[str, tuple[int, ...] | None] = {}
    calls: dict[str, int] = {}

    def hook(name):
        def record(module, args, out):
            calls[name] = calls.get(name, 0) + 1
            first.setdefault(name, tuple(out.shape) if torch.is_tensor(out) else None)
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, side, side))
    finally:
        for handle in handles:
            handle.remove()
    return {n: (s[1:], calls[n]) for n, s in first.items() if s is not None and len(s) == 4}


def table_of(layers) -> dict[str, tuple[tuple[int, ...], int]]:
    """A LayerInfo list (or the CLI's JSON rows) as {name: ((C, H, W), calls)}."""
    rows = [(li["name"], li["shape"], li["calls"]) if isinstance(li, dict) else (li.name, li.shape, li.calls)
            for li in layers]
    return {name: (tuple(shape), calls) for name, shape, calls in rows}


def pick_layer(structure) -> str:
    """A once-called 4-D layer of a LoadedModel's table, drawn with a seed from its spec (crc32, the
    same in every run)."""
    once = [li.name for li in structure.layers if li.calls == 1 and len(li.shape) == 3]
    return random.Random(zlib.crc32(structure.spec.encode())).choice(once)


def tolerance(reference: torch.Tensor) -> float:
    """1e-4 of the logits' scale: batched kernels change the last float bits, a wrong row far more."""
    return 1e-4 * float(reference.abs().max().clamp_min(1e-30))


def check_forward_many(model: nn.Module, layer: str, side: int) -> str:
    """``forward_many`` with EDITS seeded masks at ``layer`` of ``model`` equals, edit by edit,
    a plain pass with a forward hook returning the edited map; logits_before equals a plain pass;
    the edits visibly change the logits (so the comparison can fail). Returns the strategy.

    In float64: a deep random-init network can amplify the float32 noise of batched kernels (1e-7)
    a million-fold (calibrated efficientnet_b7: rows of one batch differ by 50%), and then no two
    ways of computing the same logits agree."""
    model = copy.deepcopy(model).double()
    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    edits = [masker(seed) for seed in range(EDITS)]
    run_ = M.forward_many(model, x, layer, edits)
    with torch.no_grad():
        plain = model(x)
    want = torch.cat([hooked_logits(model, x, layer, edit) for edit in edits])
    tol = tolerance(want)
    assert run_.logits_before.shape == plain.shape and run_.logits_after.shape == want.shape
    assert torch.allclose(run_.logits_before, plain, atol=tolerance(plain), rtol=1e-4)
    for i in range(EDITS):
        assert torch.allclose(run_.logits_after[i], want[i], atol=tol, rtol=1e-4), (layer, i, run_.strategy)
    moved = float((want - plain).abs().max())
    assert moved > 10 * tol, f"the edits at {layer} barely move the logits ({moved:.3g}): pick another layer"
    return run_.strategy


def check_forward_group(model: nn.Module, layer: str, side: int) -> str:
    """``forward_group`` on two images, with 2 and 1 seeded masks, equals per image a plain pass (its
    logits_before) and a plain pass with a forward hook returning each edited map. In float64, as
    :func:`check_forward_many`. Returns the strategy (``grouped``, or how the images ran one by one)."""
    model = copy.deepcopy(model).double()
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    edits = [[masker(seed) for seed in (5, 6)], [masker(7)]]
    runs = forward_group(model, x, layer, edits)
    for g, run_ in enumerate(runs):
        with torch.no_grad():
            plain = model(x[g:g + 1])
        want = torch.cat([hooked_logits(model, x[g:g + 1], layer, edit) for edit in edits[g]])
        assert torch.allclose(run_.logits_before, plain, atol=tolerance(plain), rtol=1e-4), (layer, g)
        assert torch.allclose(run_.logits_after, want, atol=tolerance(want), rtol=1e-4), (layer, g, run_.strategy)
    return runs[0].strategy


def cli_layers(spec: str, weights: Path, side: int) -> dict[str, tuple[tuple[int, ...], int]]:
    """``dropblock layers --model spec --weights FILE --input-size side --json``: exit 0, its table."""
    r = run("layers", "--model", spec, "--weights", weights, "--input-size", side, "--json")
    assert r.exit_code == 0, r.output
    return table_of(json.loads(r.stdout))


def cli_show(spec: str, weights: Path, layer: str, side: int, out: Path, masks: int = 16) -> dict:
    """``dropblock show IMAGE --layer layer --model spec --weights FILE --input-size side -n masks -o out
    --json``: exit 0, the figure written; its JSON."""
    r = run("show", IMAGE, "--layer", layer, "--model", spec, "--weights", weights, "--input-size", side,
            "-n", masks, "-o", out, "--json")
    assert r.exit_code == 0, r.output
    assert out.stat().st_size > 1000
    return json.loads(r.stdout)


def one_thread():
    """For an autouse module fixture (``yield from``): torch on one intra-op thread. On a shared 2-core
    machine, OpenMP threads that spin while other processes run can make a pass 40x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def saved(model: nn.Module, name: str, folder: Path):
    """``(model, path)`` with the model's state dict saved with torch.save in ``folder``; the file is
    removed when the generator closes (a module-scoped fixture's teardown)."""
    path = folder / f"{name}.pth"
    torch.save(model.state_dict(), path)
    yield model, path
    path.unlink()
