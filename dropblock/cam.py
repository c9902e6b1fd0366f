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
from contextlib import contextmanager
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


def _finish_order(model, x, names: Sequence[str]) -> dict[str, tuple[int, int, tuple[int, ...]]]:
    """One clean forward pass with hooks: each layer's (finish index, output storage, output shape)."""
    import torch

    from dropblock.models import layer_module
    from dropblock.models.trace import first_outputs

    with torch.no_grad():
        outputs = first_outputs({name: layer_module(model, name) for name in names}, lambda: model(x))
    maps = [(name, out) for name, out in outputs.items() if torch.is_tensor(out)]
    return {name: (i, out.untyped_storage().data_ptr(), tuple(out.shape)) for i, (name, out) in enumerate(maps)}


def _pickable(model) -> tuple[str, ...]:
    """The layer names the user can pick (input to output): a built-in's short names, else every
    module of a LoadedModel with a 4-D output."""
    short = getattr(model.module, "layer_paths", None)
    return tuple(short) if short else tuple(li.name for li in model.layers)


def _cam_layer(model, x, layer: str, cam_layer: str | None) -> str:
    """``cam_layer`` checked to be at or after ``layer`` (it finishes later in a forward pass, or is the
    same map), or by default the model's last 4-D layer larger than 1 x 1 (the pickable layer that
    finishes last: ResNets ``layer4``, EfficientNet-Lite0 ``head``)."""
    names = list(_pickable(model))
    if cam_layer is not None:
        cam_layer = model.resolve_layer(cam_layer)
    order = _finish_order(model.module, x, names + [layer] + ([cam_layer] if cam_layer else []))
    if cam_layer is None:
        maps = [n for n, (_, _, shape) in order.items() if len(shape) == 4 and shape[2] * shape[3] > 1]
        cam_layer = max(maps, key=lambda n: order[n][0])
    (cam_at, cam_ptr, cam_shape), (at, ptr, _) = order[cam_layer], order[layer]
    if len(cam_shape) != 4:
        raise ValueError(f"cam_layer {cam_layer!r} gives a {len(cam_shape)}-D output; a CAM needs a 4-D map")
    if cam_at < at and cam_ptr != ptr:
        raise ValueError(f"cam_layer {cam_layer!r} comes before layer {layer!r}: the CAM layer must be at or after "
                         "the layer the regularizer changes")
    return cam_layer


def default_cam_layer(model) -> str:
    """The CAM layer :func:`layer_cam` uses for ``model`` (a LoadedModel or a built-in network) when none
    is given (see ``_cam_layer``)."""
    from dropblock.models import as_loaded, preprocess

    model = as_loaded(model)
    size = model.input_size
    x, _ = preprocess(model, np.zeros((size, size, 3), np.uint8))
    x = x.to(next(model.module.parameters()).device)
    return _cam_layer(model, x, _pickable(model)[0], None)


@contextmanager
def _eval_mode(model):
    """The model in eval mode; every module's own mode given back afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _edit_hook(chunk):
    """A forward hook that applies masks as training does: row i of the output times keep_i * scale_i
    (one mask: every row)."""
    import torch

    keep = torch.cat([k for k, _ in chunk]).clone()  # a normal tensor, also when drawn under inference mode
    scale = torch.tensor([float(s) for _, s in chunk], dtype=torch.float64).view(-1, 1, 1, 1)

    def hook(module, args, out):
        if keep.shape[0] not in (1, out.shape[0]):
            raise RuntimeError(f"{keep.shape[0]} masks for a batch of {out.shape[0]}")
        zero = torch.zeros((), dtype=out.dtype, device=out.device)
        return torch.where(keep.to(out.device), out * scale.to(out.device, out.dtype), zero)

    return hook


def _maps(model, x, cam_layer: str, method: str, class_index: int | None, edit=None):
    """torchcam's maps (B, h, w) float32 on the CPU for a batch ``x`` and the class used (the clean
    top-1 of row 0 when None); ``edit``: (layer, masks) applied through a forward hook."""
    import logging

    import torch
    import torchcam.methods

    from dropblock.models import layer_module

    handle = None if edit is None else layer_module(model, edit[0]).register_forward_hook(_edit_hook(edit[1]))
    quiet = logging.getLogger("torchcam")
    level, quiet.level = quiet.level, logging.ERROR  # torchcam logs the fc layer it picks for "cam"
    try:
        extractor_class = getattr(torchcam.methods, CAM_METHODS[method])
        target = layer_module(model, cam_layer)
        with extractor_class(model, target_layer=target, input_shape=tuple(x.shape[1:])) as extractor:
            scores = model(x.detach().clone().requires_grad_(True))
            c = int(scores[0].argmax()) if class_index is None else int(class_index)
            if not 0 <= c < scores.shape[1]:
                raise ValueError(f"class_index must be in [0, {scores.shape[1]}), got {class_index!r}")
            maps = extractor(class_idx=[c] * x.shape[0], scores=scores)[0]
    finally:
        quiet.setLevel(level)
        if handle is not None:
            handle.remove()
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
    from dropblock.models import as_loaded, preprocess

    loaded = as_loaded(model)
    method = check_choice(method, "method", tuple(CAM_METHODS))
    batch_size = check_positive_int(batch_size, "batch_size")
    layer = loaded.resolve_layer(layer)
    if not draws:
        raise ValueError("draws must hold at least one (keep, scale) mask")
    model = loaded.module
    x, _ = preprocess(loaded, image)
    x = x.to(next(model.parameters()).device)
    cam_layer = _cam_layer(loaded, x, layer, cam_layer)
    step = batch_size if method in _BATCHED else 1
    devices = [x.device] if x.device.type == "cuda" else []
    with _eval_mode(model), torch.enable_grad(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        before, c = _maps(model, x, cam_layer, method, class_index)
        after = torch.cat([_maps(model, x.expand(len(draws[i:i + step]), -1, -1, -1), cam_layer, method, c,
                                 (layer, draws[i:i + step]))[0] for i in range(0, len(draws), step)]).mean(dim=0)
    names = loaded.class_names
    return CamResult(method, cam_layer, c, names[c] if c < len(names) else str(c), before[0].numpy(),
                     after.numpy(), len(draws))
