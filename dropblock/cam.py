"""Class activation maps before and after a regularizer, through torchcam (PyPI ``torchcam``).

:func:`layer_cam` computes a CAM (Grad-CAM and the others torchcam has, :data:`CAM_METHODS`) for one
class at one layer (the *CAM layer*) twice: on the clean network, and with the masks of a
:class:`~dropblock.effect.LayerEffect` applied at the regularized layer (each mask as training
applies it, through a forward hook; the network stays in eval mode). The "after" map is the mean of
the per-mask maps. Maps are torchcam's: ReLU'd where the method says so, then scaled to [0, 1] per
map; shape (h, w) in cells of the CAM layer's output. torch and torchcam load only when called.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["CAM_METHODS", "CamResult", "cam_json", "default_cam_layer", "layer_cam"]

#: ``--cam`` name -> torchcam class (torchcam.methods); the first five need gradients.
CAM_METHODS = {
    "gradcam": "GradCAM", "gradcampp": "GradCAMpp", "smoothgradcampp": "SmoothGradCAMpp", "xgradcam": "XGradCAM",
    "layercam": "LayerCAM", "cam": "CAM", "scorecam": "ScoreCAM", "sscam": "SSCAM", "iscam": "ISCAM",
}
_BATCHED = ("gradcam", "gradcampp", "smoothgradcampp", "xgradcam", "layercam", "cam")
"""Methods whose maps for several masks come from one batch (one mask per row); the others run the
network themselves many times per map, so each mask gets its own call."""
BATCH_SIZE = 8


@dataclass(frozen=True)
class CamResult:
    """A CAM before and after: ``method`` (a CAM_METHODS key), ``layer`` (the CAM layer),
    ``class_index`` and ``class_label``; ``before`` and ``after`` (h, w) float32 in [0, 1], ``after``
    the mean over ``samples`` masks."""

    method: str
    layer: str
    class_index: int
    class_label: str
    before: np.ndarray
    after: np.ndarray
    samples: int

    @property
    def peak_before(self) -> tuple[int, int]:
        """(row, col) of the largest value before, in cells of the CAM layer's map."""
        return _peak(self.before)

    @property
    def peak_after(self) -> tuple[int, int]:
        return _peak(self.after)

    @property
    def correlation(self) -> float | None:
        """Pearson correlation of the two maps over their cells; None when one is constant."""
        a, b = self.before.ravel().astype(np.float64), self.after.ravel().astype(np.float64)
        if a.std() == 0 or b.std() == 0:
            return None
        return float(np.corrcoef(a, b)[0, 1])


def _peak(m: np.ndarray) -> tuple[int, int]:
    row, col = np.unravel_index(int(np.argmax(m)), m.shape)
    return int(row), int(col)


def cam_json(r: CamResult) -> dict:
    """{method, layer, class_index, class_label, samples, peak_before, peak_after ([row, col]), correlation}."""
    return {"method": r.method, "layer": r.layer, "class_index": r.class_index, "class_label": r.class_label,
            "samples": r.samples, "peak_before": list(r.peak_before), "peak_after": list(r.peak_after),
            "correlation": r.correlation}


def _cam_layer(model, layer: str, cam_layer: str | None) -> str:
    """``cam_layer`` checked to be at or after ``layer`` (its first call returns later in a forward
    pass, or returns the same map), or by default the model's last 4-D layer larger than 1 x 1 (the
    pickable layer that returns last: ResNets ``layer4``, EfficientNet-Lite0 ``head``). Call order
    from the model's trace (:attr:`~dropblock.models.LoadedModel.trace`)."""
    from dropblock.errors import UsageError

    runs = {run.name: run for run in model.trace.runs}
    short = dict(getattr(model.module, "layer_paths", None) or {})
    path = lambda name: short.get(name, name)  # noqa: E731
    if cam_layer is None:
        names = tuple(short) or tuple(li.name for li in model.layers)
        maps = [n for n in names if _is_map(runs.get(path(n)))]
        return max(maps, key=lambda n: runs[path(n)].finished)
    cam_layer = model.resolve_layer(cam_layer)
    cam, at = runs.get(path(cam_layer)), runs.get(path(layer))
    if cam is None or cam.shape is None or len(cam.shape) != 4:
        dims = "no" if cam is None or cam.shape is None else f"a {len(cam.shape)}-D"
        raise UsageError(f"cam_layer {cam_layer!r} gives {dims} output; a CAM needs a 4-D map")
    if at is not None and cam.finished < at.finished and _root(runs, cam) != _root(runs, at):
        raise UsageError(f"cam_layer {cam_layer!r} comes before layer {layer!r}: the CAM layer must be at or "
                         "after the layer the regularizer changes")
    return cam_layer


def _is_map(run) -> bool:
    return run is not None and run.shape is not None and len(run.shape) == 4 and run.shape[2] * run.shape[3] > 1


def _root(runs: dict, run) -> str:
    """The module that first returned ``run``'s output (a Sequential returns its last child's map)."""
    while run.same_as is not None and run.same_as in runs:
        run = runs[run.same_as]
    return run.name


def default_cam_layer(model) -> str:
    """The CAM layer :func:`layer_cam` uses for ``model`` (a LoadedModel or a built-in network) when none
    is given (see ``_cam_layer``)."""
    from dropblock.models import as_loaded

    return _cam_layer(as_loaded(model), "", None)


def _masked(draws):
    """An edit for :func:`~dropblock.models.edit.edited_output`: the (1, C, h, w) map -> (B, C, h, w),
    row i the map times keep_i * scale_i (masks as training applies them)."""
    import torch

    keep = torch.cat([k for k, _ in draws]).clone()  # a normal tensor, also when drawn under inference mode
    scale = torch.tensor([float(s) for _, s in draws], dtype=torch.float64).view(-1, 1, 1, 1)

    def edit(feature):
        zero = torch.zeros((), dtype=feature.dtype, device=feature.device)
        return torch.where(keep.to(feature.device), feature * scale.to(feature.device, feature.dtype), zero)

    return edit


def _maps(model, x, cam_layer: str, method: str, class_index: int | None, edit=None):
    """torchcam's maps (B, h, w) float32 on the CPU for a batch ``x`` and the class used (the clean
    top-1 of row 0 when None); ``edit``: (layer, masks), the masks applied to the layer's output
    (:func:`~dropblock.models.edit.edited_output`, on the B rows of ``x``)."""
    import logging
    from contextlib import nullcontext

    import torch
    import torchcam.methods

    from dropblock.errors import UsageError
    from dropblock.models import layer_module
    from dropblock.models.edit import edited_output

    edited = nullcontext() if edit is None else edited_output(layer_module(model, edit[0]), _masked(edit[1]))
    quiet = logging.getLogger("torchcam")
    level, quiet.level = quiet.level, logging.ERROR  # torchcam logs the fc layer it picks for "cam"
    try:
        extractor_class = getattr(torchcam.methods, CAM_METHODS[method])
        target = layer_module(model, cam_layer)
        with edited, extractor_class(model, target_layer=target, input_shape=tuple(x.shape[1:])) as extractor:
            scores = model(x.detach().clone().requires_grad_(True))
            c = int(scores[0].argmax()) if class_index is None else int(class_index)
            if not 0 <= c < scores.shape[1]:
                raise UsageError(f"class_index must be in [0, {scores.shape[1]}), got {class_index!r}")
            maps = extractor(class_idx=[c] * x.shape[0], scores=scores)[0]
    finally:
        quiet.setLevel(level)
    return maps.detach().to("cpu", torch.float32), c


def layer_cam(model, image: np.ndarray, layer: str, draws: Sequence, *, method: str = "gradcam",
              cam_layer: str | None = None, class_index: int | None = None, batch_size: int = BATCH_SIZE,
              seed: int = 0) -> CamResult:
    """A CAM of ``image`` before and after the masks ``draws`` at ``layer``.

    Args:
        model, image, layer: as for :func:`~dropblock.effect.layer_effect` (a LoadedModel or a built-in
            network).
        draws: the masks, ``(keep, scale)`` pairs: keep (1, C or 1, h, w) bool, kept units times scale
            (a LayerEffect's ``draws``).
        method: a :data:`CAM_METHODS` key.
        cam_layer: where the CAM is taken, at or after ``layer``; default: the model's last 4-D layer.
        class_index: the class; default: the clean network's top-1.
        batch_size: masks per pass for the gradient methods.
        seed: seeds torch's global generator, inside a fork, for methods that add noise (smoothgradcampp,
            sscam, iscam).

    Raises:
        UnknownNameError: unknown layer or CAM layer. ValueError: bad method, no draws, a CAM layer before
        ``layer`` or not 4-D, a class index out of range; torchcam's own errors, in one line.
    """
    import torch

    from dropblock._checks import check_choice, check_positive_int
    from dropblock.errors import UsageError
    from dropblock.models import as_loaded, eval_mode, preprocess

    loaded = as_loaded(model)
    method = check_choice(method, "method", tuple(CAM_METHODS))
    batch_size = check_positive_int(batch_size, "batch_size")
    layer = loaded.resolve_layer(layer)
    if not draws:
        raise UsageError("draws must hold at least one (keep, scale) mask")
    model = loaded.module
    x, _ = preprocess(loaded, image)
    x = x.to(next(model.parameters()).device)
    cam_layer = _cam_layer(loaded, layer, cam_layer)
    step = batch_size if method in _BATCHED else 1
    devices = [x.device] if x.device.type == "cuda" else []
    with eval_mode(model), torch.enable_grad(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        before, c = _maps(model, x, cam_layer, method, class_index)
        after = torch.cat([_maps(model, x.expand(len(draws[i:i + step]), -1, -1, -1), cam_layer, method, c,
                                 (layer, draws[i:i + step]))[0] for i in range(0, len(draws), step)]).mean(dim=0)
    names = loaded.class_names
    return CamResult(method, cam_layer, c, names[c] if c < len(names) else str(c), before[0].numpy(),
                     after.numpy(), len(draws))
