"""Switching a model to eval mode and back, module by module.

``model.train(flag)`` sets every submodule to ``flag``: a BatchNorm frozen in eval mode inside a
training model would come back in train mode (and its running statistics would change on the next
step). :func:`eval_mode` records each module's own flag and gives each back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the ``with`` block; afterwards every module has its own
    ``training`` flag back, whatever the block raised."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training
