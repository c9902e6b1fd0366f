"""One loaded classifier, from any model spec (:mod:`~dropblock.models.names`): the module with its
preprocessing, class names and layers. torchvision, timm and safetensors load only when needed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path

import torch
from torch import nn

from dropblock.errors import UsageError, one_line

from .errors import ModelLoadError, ModelSpecError, why
from .layers import (LayerInfo, Trace, check_logits, filter_layers, layer_path, not_a_map, trace_model, unknown_layer)
from .names import NUM_CLASSES, ModelSpec, class_names, parse_spec, resolve_model
from .nets import BuiltinNet
from .preprocessing import PREPROCESSING, Preprocessing
from .sources import Built, build_builtin, build_user


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A classifier ready to run on one image: ``module``, in eval mode, maps (1, 3, S, S) to (1, K)
    logits (S = ``preprocessing.crop``); ``spec`` names it (``"torchvision:resnet50"``); ``weights``
    says where its weights came from: a file, ``"default"``, ``"random init"``, ``"own code"`` or
    ``"as given"`` (:func:`as_loaded`)."""

    module: nn.Module = field(repr=False)
    spec: str
    preprocessing: Preprocessing
    class_names: tuple[str, ...] = field(repr=False)
    weights: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_size(self) -> int:
        """S, the side of the square input, px."""
        return self.preprocessing.crop

    @cached_property
    def trace(self) -> Trace:
        """Every module that runs for a zero image at the input size (one pass, then cached). A model
        with class names must return one logit per name; a headless one (timm's ``num_classes=0``)
        may return anything."""
        trace = trace_model(self.module, self.input_size)
        classes = self.num_classes and check_logits(trace.output_shape, trace.output_type, self.spec)
        if classes != self.num_classes:
            raise ModelLoadError(f"{self.spec} returns {classes} logits but has {self.num_classes} class names")
        return trace

    @cached_property
    def layers(self) -> tuple[LayerInfo, ...]:
        """Every module whose output is an (N, C, H, W) map, in call order."""
        return self.trace.layers()

    def resolve_layer(self, name: str) -> str:
        """``name`` as layers are shown (a built-in's short name, else the ``named_modules`` name),
        checked to name a module without running the model (but to list close matches)."""
        return self._path(name)[0]

    def layer(self, name: str) -> LayerInfo:
        """The layer called ``name``; a LayerError if its output is not one (N, C, H, W) map."""
        display, path = self._path(name)
        info = next((li for li in self.layers if li.name == path), None)
        if info is None or info.calls != 1:
            raise not_a_map(path, self.trace, self.spec)
        return LayerInfo(display, info.type, info.shape, info.dropblock_ok, info.calls)

    def _path(self, name: str) -> tuple[str, str]:
        found = layer_path(self.module, name)
        if found is None:
            raise unknown_layer(name, self.trace, self.spec, self.module)
        return found


def as_loaded(model: LoadedModel | nn.Module) -> LoadedModel:
    """``model`` itself, or a built-in network with its own preprocessing and the ImageNet class
    names; a TypeError for any other model."""
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, BuiltinNet):
        return LoadedModel(model, model.arch, PREPROCESSING[model.arch], tuple(class_names()), "as given")
    raise TypeError(f"expected a LoadedModel (dropblock.models.load_classifier) or a built-in "
                    f"network, got {type(model).__name__}")


def read_class_names(path: str | Path) -> tuple[str, ...]:
    """One class name per line (blank lines at the end ignored)."""
    path = Path(path).expanduser()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelSpecError(f"cannot read class names file {path}: {why(exc)}") from None
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ModelSpecError(f"class names file {path} is empty; write one name per line")
    return tuple(line.strip() for line in lines)


def _names(built: Built, given: str | Path | Sequence[str] | None, spec: str) -> tuple[str, ...]:
    """One name per output: ``given`` (a file of one name per line, or the names), else the source's,
    else ImageNet's for 1000 outputs, else ``class i``."""
    if given is None:
        if built.names is not None and len(built.names) == built.classes:
            return built.names
        return tuple(class_names() if built.classes == NUM_CLASSES else (f"class {i}" for i in range(built.classes)))
    if isinstance(given, (str, Path)):
        names, where = read_class_names(given), f"class names file {given}"
    else:
        names, where = tuple(str(n) for n in given), "class_names"
    if len(names) != built.classes:
        raise ModelSpecError(f"{where} has {len(names)} names but {spec} has {built.classes} outputs")
    return names


def _build(spec: ModelSpec, weights: str | Path | None, pretrained: bool, download: bool,
          meta: bool, input_size: int | None) -> Built:
    """The model ``spec`` names, by its kind (torchvision and timm imported only for theirs)."""
    if spec.kind in ("module", "file"):
        return build_user(spec, weights, input_size or 224)
    if spec.kind == "builtin":
        return build_builtin(spec, weights, pretrained, download, meta)
    from .hubs import build_timm, build_torchvision

    build = build_torchvision if spec.kind == "torchvision" else build_timm
    return build(spec, weights, pretrained, download, meta)


def _weights_label(spec: ModelSpec, weights: str | Path | None, pretrained: bool) -> str:
    """Where the weights come from: the file, ``"own code"`` (user code), ``"default"`` or ``"random init"``."""
    if weights is not None:
        return str(Path(weights).expanduser())
    if spec.kind in ("module", "file"):
        return "own code"
    return "default" if pretrained else "random init"


def load_classifier(
    spec: str | ModelSpec, *, weights: str | Path | None = None, download: bool = False,
    pretrained: bool = True, device: str | torch.device = "cpu", input_size: int | None = None,
    mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
    class_names: str | Path | Sequence[str] | None = None,
) -> LoadedModel:
    """The classifier ``spec`` names (``torchvision:resnet50``, ``path/to/model.py:build``).

    ``weights``: a state dict file for any form (a torchvision or timm model is built for the
    classes of its output layer). ``download``: fetch default weights that are not cached.
    ``pretrained=False``: random init, no weights read (user code keeps its own); device ``"meta"``
    needs it. ``input_size``, ``mean``, ``std`` (0..1 pixel units) override the preprocessing;
    ``class_names``: a file with one name per line, or the names.
    """
    parsed = spec if isinstance(spec, ModelSpec) else parse_spec(spec)
    if weights is not None and not pretrained:
        raise UsageError(f"weights {str(weights)!r} given with pretrained=False")
    meta = str(device) == "meta"
    if meta and pretrained:
        raise UsageError("device 'meta' holds no data: pass pretrained=False")
    target = torch.device("meta") if meta else check_device(device)
    built = _build(parsed, weights, pretrained, download, meta, input_size)
    prep = built.preprocessing.with_overrides(input_size, mean, std)
    names = _names(built, class_names, str(parsed))
    loaded = LoadedModel(built.module.to(target).eval(), str(parsed), prep, names,
                         _weights_label(parsed, weights, pretrained))
    if built.trace is not None:
        loaded.__dict__["trace"] = built.trace  # fills the cached property
    return loaded


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device that works here (a UsageError for ``"cuda"`` without a GPU)."""
    try:
        device = torch.device(device)
        torch.empty(0, device=device)  # fails early for e.g. "cuda" without a GPU
    except (RuntimeError, AssertionError, ValueError, TypeError) as exc:
        raise UsageError(f"cannot use device {str(device)!r}: {one_line(exc)}") from exc
    return device


def load_model(name: str, weights: str | Path | None = None, download: bool = False,
               device: str | torch.device = "cpu") -> BuiltinNet:
    """The built-in network ``name`` in eval mode on ``device``, with its default weights or the
    state-dict file ``weights`` (:func:`load_classifier`'s module)."""
    spec = ModelSpec("builtin", resolve_model(name))
    return load_classifier(spec, weights=weights, download=download, device=device).module


def load_structure(spec: str | ModelSpec, *, input_size: int | None = None,
                   class_names: str | Path | Sequence[str] | None = None) -> LoadedModel:
    """A model with random weights and its ``.trace`` filled, for its layer table: built and run on
    the meta device (no data, no compute) where it can be, else on the CPU (a constructor that
    computes with tensors, an op without a meta kernel). User code keeps its own weights."""
    kwargs = dict(pretrained=False, input_size=input_size, class_names=class_names)
    try:
        loaded = load_classifier(spec, device="meta", **kwargs)
        loaded.trace
    except ModelLoadError:
        loaded = load_classifier(spec, device="cpu", **kwargs)
        loaded.trace
    return loaded


@lru_cache(maxsize=None)
def _layer_table(name: str) -> tuple[LayerInfo, ...]:
    loaded = load_structure(name)
    return tuple(loaded.layer(layer) for layer in loaded.module.layer_paths)


def layer_table(model: str | LoadedModel | nn.Module, filter: str | Sequence[str] | None = None) -> list[LayerInfo]:
    """The pickable layers, input to output, of a built-in by name (its short-named layers at 224,
    measured once on the meta device), of a :class:`LoadedModel` (every module with a 4-D output at
    its input size) or of any ``nn.Module`` (the same at 224); ``filter``: globs on the names."""
    if isinstance(model, str):
        table = _layer_table(resolve_model(model))
    elif isinstance(model, LoadedModel):
        table = model.layers
    else:
        table = trace_model(model, 224).layers()
    return filter_layers(table, filter)
