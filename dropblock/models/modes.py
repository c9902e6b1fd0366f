"""Eval mode and back, module by module: ``model.train(flag)`` would give every submodule the
same flag, so a BatchNorm frozen in eval mode inside a training model would come back training."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block; then each module gets its own ``training`` flag back."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training
