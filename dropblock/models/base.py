"""The built-in networks' common base: a model name and short layer names."""

from __future__ import annotations

from torch import nn

from .names import LAYER_PATHS


class BuiltinNet(nn.Module):
    """A built-in classifier. Subclasses set ``arch`` (its model name); its short layer names
    (``stem``, ``blocks.5``, ``layer3``) and their modules come from :data:`~.names.LAYER_PATHS`."""

    arch: str = ""

    @property
    def layer_paths(self) -> dict[str, str]:
        """Each short layer name, input to output, mapped to the ``named_modules`` name of the
        submodule whose output is that layer's activation."""
        return dict(LAYER_PATHS[self.arch])

    @property
    def layer_names(self) -> tuple[str, ...]:
        """The short layer names, input to output."""
        return tuple(self.layer_paths)

    def layer_module(self, layer: str) -> nn.Module:
        """The submodule whose forward output is ``layer``'s activation (for forward hooks)."""
        return self.get_submodule(self.layer_paths[layer])
