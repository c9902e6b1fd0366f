"""Several images' edits of one layer in one forward pass: what a sweep with few masks per image needs to
fill a batch (on a GPU, a pass of a few rows costs about what a pass of a full batch does).

:func:`forward_group` takes G images and, for each, its own edits of the layer's (1, C, h, w) map. The layers
before it run once on the G images; a forward hook on it returns, image after image, the unedited map and
that image's edited maps (R rows in all); and :class:`ImageRows` repeats an image's row of any G-row tensor
that meets an R-row one later in the pass (a skip connection, a join) as many times as the image has rows.
Code that mixes rows or reads the batch size would make that wrong, so each (model, layer, rows per image)
is checked once against :func:`~dropblock.models.forward_many` image by image, on every row; where the
check fails or the pass raises, the images run one by one from then on.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from dropblock.errors import UsageError
from dropblock.models import eval_mode, forward_many
from dropblock.models.edit import (Edit, EditShapeError, FeatureBatchRun, apply_edit, check_finite, edited_output,
                                   logits_close, target_of)

_grouped: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> {(path, rows per image): bool}


class ImageRows(TorchFunctionMode):
    """Where an operand of ``len(repeats)`` rows (one per image) meets one of ``sum(repeats)`` rows (each
    image's rows in turn), the former's row i is repeated ``repeats[i]`` times. Parameters, and tensors
    of fewer than 2 dimensions, are left alone."""

    def __init__(self, repeats: Sequence[int], device: torch.device) -> None:
        super().__init__()
        self.images, self.rows = len(repeats), int(sum(repeats))
        self.repeats = torch.tensor(list(repeats), device=device)

    def _rows(self, value: object) -> int | None:
        if torch.is_tensor(value) and value.ndim >= 2 and not isinstance(value, nn.Parameter):
            return int(value.shape[0])
        return None

    def _widen(self, value: object) -> object:
        if type(value) in (list, tuple):  # a join's operands (not a torch.Size or a named tuple)
            return type(value)(self._widen(v) for v in value)
        if self._rows(value) == self.images:
            return value.repeat_interleave(self.repeats.to(value.device), dim=0, output_size=self.rows)
        return value

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: D105
        kwargs = kwargs or {}
        flat = [v for a in args for v in (a if type(a) in (list, tuple) else (a,))]
        counts = {self._rows(v) for v in flat}
        if self.rows in counts and self.images in counts:
            args = tuple(self._widen(a) for a in args)
        return func(*args, **kwargs)


def forward_group(model: nn.Module, x: torch.Tensor, layer: str,
                  edits: Sequence[Sequence[Edit]]) -> list[FeatureBatchRun]:
    """G images' edits of their activations at ``layer``, in one pass where the model allows it (the module
    docstring says how): run g is what :func:`~dropblock.models.forward_many` gives for image g, its ``edits[g]`` and
    ``clean=True``, up to the last float bits of batched kernels. The caller keeps the pass small: it holds
    G + sum(len(e) for e in edits) rows. Eval mode and ``torch.inference_mode()`` as forward_many.

    Args:
        model: as for forward_many.
        x: (G, 3, H, W) preprocessed inputs.
        layer: as for forward_many.
        edits: G lists of edits, each as for forward_many (at least one each).

    Raises:
        as forward_many; ValueError: ``x`` and ``edits`` do not match.
    """
    if not torch.is_tensor(x) or x.ndim != 4 or x.shape[1] != 3 or x.shape[0] != len(edits) or not all(edits):
        raise UsageError(f"forward_group takes (G, 3, H, W) inputs and G non-empty lists of edits, got "
                         f"{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__} and {len(edits)} lists")
    net, name, x, display, path = target_of(model, x, layer)
    key = (path, tuple(len(e) for e in edits))
    known = _grouped.get(net, {}).get(key)
    with eval_mode(net), torch.inference_mode():
        maps, runs = [], None
        if known is not False:
            runs = _one_pass(net, path, display, x, [list(e) for e in edits], maps)
        if known is None:
            apart = _apart(model, x, layer, edits, maps)
            ok = runs is not None and all(_same(a, b) for a, b in zip(runs, apart))
            _grouped.setdefault(net, {})[key] = ok
            runs = runs if ok else apart
        elif runs is None:
            runs = _apart(model, x, layer, edits, maps)
    for run in runs:
        check_finite(name, display, run.logits_before, run.logits_after)
    return runs


def _one_pass(net: nn.Module, path: str, display: str, x: torch.Tensor, edits: list[list[Edit]],
              maps: list) -> list[FeatureBatchRun] | None:
    """The runs of one pass of all the images (None where it raises or returns other than one row of logits
    per row); ``maps`` gets each image's edited maps (1, C, h, w) as they are made."""
    repeats = [1 + len(e) for e in edits]

    def make(feature: torch.Tensor) -> torch.Tensor:  # (G, C, h, w) -> each image's unedited and edited maps
        if feature.shape[0] != len(edits):  # not a row per image: left alone, so the images run apart
            return feature
        maps.extend([apply_edit(e, feature[g:g + 1]) for e in image_edits] for g, image_edits in enumerate(edits))
        return torch.cat([m for g, made in enumerate(maps) for m in (feature[g:g + 1], *made)])

    try:
        with edited_output(net.get_submodule(path), make, lambda rows: ImageRows(repeats, x.device),
                           rows=len(edits)) as seen:
            out = net(x)
    except EditShapeError:
        raise
    except (Exception, SystemExit):
        return None
    if seen.calls != 1 or seen.mode is None or not torch.is_tensor(out) or out.shape[0] != sum(repeats) \
            or out.ndim != 2:
        return None
    return [FeatureBatchRun(display, r[:1], r[1:], seen.output[g:g + 1], None, "grouped")
            for g, r in enumerate(out.split(repeats))]


def _apart(model, x: torch.Tensor, layer: str, edits: Sequence[Sequence[Edit]], maps: list) -> list[FeatureBatchRun]:
    """forward_many image by image, on the edited maps already made (``maps``), else on the edits."""
    return [forward_many(model, x[g:g + 1], layer, [(lambda f, m=m: m) for m in maps[g]] if g < len(maps) else e,
                         batch_size=len(e)) for g, e in enumerate(edits)]


def _same(a: FeatureBatchRun, b: FeatureBatchRun) -> bool:
    return logits_close(a.logits_before, b.logits_before) and logits_close(a.logits_after, b.logits_after)
