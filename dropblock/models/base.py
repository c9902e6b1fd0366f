"""A classifier whose forward pass is a fixed chain of named steps.

Splitting the forward pass into steps lets :mod:`dropblock.models.features` compute a layer's
activation once and then run only the rest of the network on edited copies of it. ``forward``
is that same chain, so a prefix followed by the suffix is exactly a plain forward pass.
"""

from __future__ import annotations

import torch
from torch import nn


class SteppedNet(nn.Module):
    """Base class: ``forward(x) == forward_range(forward_range(x, 0, k), k)`` for any k.

    Subclasses set ``arch`` (registry name), ``step_names`` (one per step, the last one
    ``"classifier"`` mapping pooled features to logits), ``layer_steps`` (user layer name ->
    index of the step whose output is that layer's activation), ``layer_paths`` (user layer
    name -> dotted path of the submodule whose forward output is that activation, for hooks)
    and ``step_modules`` (per step, the paths of the submodules it calls), and implement
    :meth:`run_step`.
    """

    arch: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.step_names: tuple[str, ...] = ()
        self.layer_steps: dict[str, int] = {}
        self.layer_paths: dict[str, str] = {}
        self.step_modules: tuple[tuple[str, ...], ...] = ()

    @property
    def layer_names(self) -> tuple[str, ...]:
        """The user-facing layer names, input to output."""
        return tuple(self.layer_steps)

    def run_step(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Apply step ``index`` to ``x``, the output of step ``index - 1`` (or the image)."""
        raise NotImplementedError

    def forward_range(
        self, x: torch.Tensor, start: int = 0, stop: int | None = None
    ) -> torch.Tensor:
        """Run steps ``start .. stop-1`` on ``x``; ``(0, None)`` is the whole network."""
        stop = len(self.step_names) if stop is None else stop
        for index in range(start, stop):
            x = self.run_step(index, x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalized image -> (B, num_classes) logits."""
        return self.forward_range(x)

    def first_step(self, path: str) -> int:
        """The first step that runs the submodule at ``path`` (a ``named_modules`` name) or one
        inside it; 0 when none does. The steps before it never call that submodule."""
        for index, names in enumerate(self.step_modules):
            for name in names:
                if path == name or path.startswith(name + ".") or name.startswith(path + "."):
                    return index
        return 0

    def layer_module(self, layer: str) -> nn.Module:
        """The submodule whose forward output is ``layer``'s activation (for forward hooks)."""
        return self.get_submodule(self.layer_paths[layer])
