"""The built-in networks' common base: a registry name and short layer names."""

from __future__ import annotations

from torch import nn


class BuiltinNet(nn.Module):
    """A built-in classifier. Subclasses set ``arch`` (registry name) and ``layer_paths``: each
    short layer name (``stem``, ``blocks.5``, ``layer3``), input to output, mapped to the
    ``named_modules`` name of the submodule whose output is that layer's activation."""

    arch: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.layer_paths: dict[str, str] = {}

    @property
    def layer_names(self) -> tuple[str, ...]:
        """The short layer names, input to output."""
        return tuple(self.layer_paths)

    def layer_module(self, layer: str) -> nn.Module:
        """The submodule whose forward output is ``layer``'s activation (for forward hooks)."""
        return self.get_submodule(self.layer_paths[layer])
