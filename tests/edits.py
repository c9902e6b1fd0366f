"""Test helpers for feature-map edits: a seeded random mask, and the forward-hook reference."""

import torch


def masker(seed: int, p: float = 0.5):
    """An edit that zeroes a seeded random set of positions (shared by all channels) and rescales."""
    def edit(f):
        g = torch.Generator().manual_seed(seed)
        keep = (torch.rand(f.shape[-2:], generator=g) > p).to(f.dtype)
        return f * keep / (1 - p)
    return edit


def hooked_logits(model, x, layer, edit):
    """The reference: ``model(x)`` with a forward hook on ``layer`` that returns edit(output)."""
    handle = model.get_submodule(layer).register_forward_hook(lambda m, a, out: edit(out))
    try:
        with torch.no_grad():
            return model(x)
    finally:
        handle.remove()


def assert_edits_match_hooks(model, x, layers, edits, atol=1e-4):
    """``forward_many`` at each of ``layers`` gives, for each edit, what :func:`hooked_logits` gives."""
    import dropblock.models as M

    for layer in layers:
        run = M.forward_many(model, x, layer, edits)
        for i, edit in enumerate(edits):
            want = hooked_logits(model, x, layer, edit)[0]
            assert torch.allclose(run.logits_after[i], want, atol=atol, rtol=atol), (layer, i)
