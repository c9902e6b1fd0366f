"""The sweep's per-image engine: one image through every (layer, setting) asked for.

The image is preprocessed once. Per layer, the masks of every feature-map setting are the edits of one
:func:`~dropblock.models.forward_many` call: the layers before it run once per batch, the unedited row
rides in the first batch (its logits are that layer's clean reference), and the edited maps fill the
rest. So no separate clean pass is needed; each (image, layer) row depends on nothing but the image,
the layer and the setting (not on the other layers of the run), which is what resuming needs. Images
with few edits can share that pass (:func:`sweep_group`, :func:`images_per_pass`): then a row also
depends, in its last float bits, on the group of images it was computed with.

The input series need the whole network per mask. ``cutout-input``: the N cut crops go through the
network in batches (the uncut crop first, as its clean reference), once per image whatever the number
of layers (they do not touch a layer, so every layer gets the same row). ``cutout-input+dropblock``:
one forward_many call per mask, on the cut crop, with that mask's DropBlock edit at the layer; KL and
agreement against the layer's clean reference (the uncut crop).

Cut pixels are set to 0 in the normalized input, the dataset's mean colour, as the Cutout paper does.
Nothing here prints.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import torch

from dropblock._checks import check_positive_int
from dropblock.method_names import FEATURE_METHODS
from dropblock.errors import UsageError
from dropblock.sweep import BATCH_SIZE, ImageRow, Setting, _check_setting, setting_seed

__all__ = ["ImageInput", "sweep_layers", "sweep_group", "rows_per_image", "images_per_pass", "mask_cost"]

Cost = Callable[[str, Setting], float]


def mask_cost(setting: Setting, suffix: float) -> float:
    """What one mask of ``setting`` costs in full passes of the network, when the part after the layer is
    ``suffix`` (0..1) of a pass: a feature-map edit runs that part only; ``cutout-input`` a whole pass;
    ``cutout-input+dropblock`` a whole pass and the clean row after the layer. keep_prob 1 costs nothing."""
    if setting.keep_prob >= 1.0:
        return 0.0
    if setting.method == "cutout-input":
        return 1.0
    if setting.method == "cutout-input+dropblock":
        return 1.0 + suffix
    return suffix


class ImageInput(NamedTuple):
    """One image of :func:`sweep_group`: (H, W, 3) uint8 RGB ``pixels``, its ``content``
    (:func:`~dropblock.sweep.content_id`), the rows' ``name`` and its true class ``label`` (or None)."""

    pixels: np.ndarray
    content: str
    name: str = ""
    label: int | None = None


def rows_per_image(settings: Sequence[Setting], masks: int) -> int:
    """Rows an image brings to a pass at a layer: its unedited row and ``masks`` edits per feature-map setting
    below keep_prob 1 (1 when it has no such edit: no pass at the layer then)."""
    return 1 + masks * len(_live(settings))


def images_per_pass(settings: Sequence[Setting], masks: int, batch_size: int = BATCH_SIZE) -> int:
    """How many images' feature-map edits :func:`sweep_group` puts in one pass of at most ``batch_size`` rows
    (:func:`rows_per_image`); 1 when one image fills the pass (or has no such edit)."""
    rows = rows_per_image(settings, masks)
    return max(1, batch_size // rows) if rows > 1 else 1


def sweep_layers(model, image: np.ndarray, todo: Mapping[str, Sequence[Setting]], *, content: str, name: str = "",
                 label: int | None = None, **kw) -> list[ImageRow]:
    """One image through ``todo``: :func:`sweep_group` of that image alone (see it for the keywords)."""
    return sweep_group(model, [ImageInput(image, content, name, label)], todo, **kw)[0]


def sweep_group(
    model, images: Sequence[ImageInput], todo: Mapping[str, Sequence[Setting]], *, masks: int, seed: int,
    gamma: str | float = "paper", device="cpu", batch_size: int = BATCH_SIZE,
    progress: Callable[[float], object] | None = None, cost: Cost | None = None,
) -> list[list[ImageRow]]:
    """Each image through ``todo`` ({layer: settings}): ``masks`` masks per (layer, setting), one row each, in
    ``todo``'s order; a list of rows per image. With several images, their feature-map edits at a layer share
    one pass (:func:`~dropblock.shared_pass.forward_group`; the caller keeps the group to
    :func:`images_per_pass`): the rows equal those of each image alone up to the last float bits of
    batched kernels, and depend only on the group's images, so a run groups them the same way every time.

    Args:
        model: a LoadedModel or a built-in network (as :func:`~dropblock.effect.layer_effect`).
        images: the :class:`ImageInput` of each image (at least one).
        todo: layer name (``named_modules`` or a built-in's short name) -> settings (:func:`settings_grid`).
        masks: N masks per setting.
        seed: the run's seed.
        gamma: DropBlock's ``"paper"``, ``"exact"`` or a float.
        device: where masks are drawn (the model's device).
        batch_size: edited maps (or cut crops) per pass of one image.
        progress: called as masks are done, with ``cost(layer, setting)`` per mask (1 without ``cost``).

    Raises:
        UnknownNameError: unknown layer. LayerError: its output is not one 4-D map. ModelLoadError: the
        model fails. ValueError: bad settings, masks, batch size or image.
    """
    from dropblock.models import as_loaded, preprocess

    model = as_loaded(model)
    masks = check_positive_int(masks, "masks")
    batch_size = check_positive_int(batch_size, "batch_size")
    if not images:
        raise UsageError("sweep_group needs at least one image")
    for settings in todo.values():
        for s in settings:
            _check_setting(s)
    for image in images:
        _check_resize(np.shape(image.pixels), model.preprocessing.short_side)
    layers = {layer: model.resolve_layer(layer) for layer in todo}
    jobs = [_Image(model, preprocess(model, im.pixels)[0], masks, seed, im.content, im.name, gamma, im.label, device,
                   batch_size, progress, cost) for im in images]
    rows: list[list[ImageRow]] = [[] for _ in jobs]
    for layer, settings in todo.items():
        for out, job, run in zip(rows, jobs, _feature_runs(jobs, layers[layer], settings)):
            out.extend(job.layer_rows(layers[layer], settings, run))
    return rows


def _feature_runs(jobs: list, layer: str, settings: Sequence[Setting]) -> list:
    """Per image, the FeatureBatchRun of its feature-map edits at ``layer`` (None when ``settings`` need no pass
    at the layer): forward_many for one image, forward_group for several."""
    from dropblock.models import forward_many
    from dropblock.shared_pass import forward_group

    if all(s.method == "cutout-input" for s in settings):
        return [None] * len(jobs)
    edits = [job.edits(layer, settings) for job in jobs]
    if len(jobs) == 1:
        return [forward_many(jobs[0].model, jobs[0].x, layer, edits[0], batch_size=jobs[0].batch_size)]
    return forward_group(jobs[0].model, torch.cat([job.x for job in jobs]), layer, edits)


def _check_resize(shape: tuple[int, ...], side: int | None) -> None:
    """ValueError when an image of ``shape`` (H, W, ...) would pass MAX_RESIZED_PIXELS once resized."""
    from dropblock.images import ImageLoadError, check_resize

    if side is not None and len(shape) >= 2:
        try:
            check_resize(shape[0], shape[1], side)
        except ImageLoadError as e:
            raise UsageError(str(e)) from None


class _Image:
    """One image's sweep: its input ``x`` (1, 3, S, S) and the run's options; ``layer_rows`` per layer.
    The ``cutout-input`` logits are computed once and kept for every layer."""

    def __init__(self, model, x, masks, seed, content, name, gamma, label, device, batch_size, progress, cost):
        self.model, self.x, self.masks, self.seed, self.content, self.name = model, x, masks, seed, content, name
        self.gamma, self.label, self.device, self.batch_size = gamma, label, device, batch_size
        self.progress, self.cost = progress, cost or (lambda layer, s: 1.0)
        self._cut: dict[float, tuple[torch.Tensor, torch.Tensor, list[float]]] = {}  # keep_prob -> clean, after, rates
        self.edited: dict = {}  # setting -> its MaskSeries, at the layer of the last edits()

    def tick(self, layer: str, s: Setting, n: int = 1) -> None:
        if self.progress is not None:
            self.progress(n * self.cost(layer, s))

    def series(self, method: str, block: int | None, keep_prob: float):
        """The :class:`~dropblock.effect.MaskSeries` of (method, block, keep_prob) on a feature map."""
        from dropblock.effect import MaskSeries

        s = Setting(method, block, keep_prob)
        return MaskSeries(method, 1.0 - keep_prob, self.masks, block_size=block or 1, gamma=self.gamma,
                          shared_channels=False, seed=setting_seed(self.seed, self.content, s), device=self.device)

    def cuts(self, keep_prob: float) -> tuple[list[torch.Tensor], list[float]]:
        """The N cut crops (1, 3, S, S) of ``cutout-input`` at ``keep_prob``, and their realized drop rates."""
        from dropblock.methods import draw_mask

        s = Setting("cutout-input", None, keep_prob)
        generator = torch.Generator(self.device).manual_seed(setting_seed(self.seed, self.content, s))
        draws = [draw_mask("cutout", tuple(self.x.shape), 1.0 - keep_prob, generator=generator, device=self.device)
                 for _ in range(self.masks)]
        zero = torch.zeros((), dtype=self.x.dtype, device=self.x.device)
        return [torch.where(d.keep.to(self.x.device), self.x, zero) for d in draws], [d.drop_rate for d in draws]

    def edits(self, layer: str, settings: Sequence[Setting]) -> list:
        """The feature-map edits of ``settings`` at ``layer``, in order (``masks`` a setting below keep_prob 1), each
        ticking the progress once; the identity when there is none."""
        from dropblock.effect import counted

        self.edited = {s: self.series(s.method, s.block_size, s.keep_prob) for s in _live(settings)}
        queue = [counted(series.edits(), lambda n, s=s: self.tick(layer, s, n)) for s, series in self.edited.items()]
        return [e for q in queue for e in q] or [lambda f: f]

    def layer_rows(self, layer: str, settings: Sequence[Setting], run) -> list[ImageRow]:
        """One row per setting at ``layer``, in order; ``run`` the FeatureBatchRun of :meth:`edits` (None when every
        setting is ``cutout-input``)."""
        clean = after = shape = None
        if run is not None:
            shape = tuple(run.feature_before.shape)
            clean = run.logits_before[0].detach().to("cpu", torch.float64)
            after = run.logits_after.detach().to("cpu", torch.float64)
        rows, start = [], 0
        for s in settings:
            if s.method == "cutout-input":
                rows.append(self.cut_row(layer, s))
            elif s.keep_prob >= 1.0:
                rows.append(_row(self.name, layer, s, clean, clean[None].expand(self.masks, -1), [0.0] * self.masks,
                                 self.label))
                self.tick(layer, s, self.masks)
            elif s in self.edited:
                rows.append(_row(self.name, layer, s, clean, after[start:start + self.masks],
                                 self.edited[s].drop_rates(shape), self.label))
                start += self.masks
            else:
                rows.append(self.combo_row(layer, s, clean, shape))
        return rows

    def cut_row(self, layer: str, s: Setting) -> ImageRow:
        """The ``cutout-input`` row (the same for every layer)."""
        if s.keep_prob >= 1.0:
            clean = _plain_logits(self.model, [self.x], self.batch_size)[0]
            self.tick(layer, s, self.masks)
            return _row(self.name, layer, s, clean, clean[None].expand(self.masks, -1), [0.0] * self.masks,
                        self.label)
        if s.keep_prob not in self._cut:
            crops, rates = self.cuts(s.keep_prob)
            logits = _plain_logits(self.model, [self.x, *crops], self.batch_size,
                                   lambda n: self.tick(layer, s, n))
            self._cut[s.keep_prob] = (logits[0], logits[1:], rates)
        else:
            self.tick(layer, s, self.masks)
        clean, after, rates = self._cut[s.keep_prob]
        return _row(self.name, layer, s, clean, after, rates, self.label)

    def combo_row(self, layer: str, s: Setting, clean: torch.Tensor, shape) -> ImageRow:
        """The ``cutout-input+dropblock`` row: per mask, the cut crop through the network with DropBlock's
        mask at ``layer`` (the masks of ``cutout-input`` and of DropBlock at this block size and keep_prob)."""
        from dropblock.models import forward_many

        crops, _ = self.cuts(s.keep_prob)
        blocks = self.series("dropblock", s.block_size, s.keep_prob)
        after = []
        for crop, edit in zip(crops, blocks.edits()):
            run = forward_many(self.model, crop, layer, [edit], batch_size=self.batch_size)
            after.append(run.logits_after.detach().to("cpu", torch.float64))
            self.tick(layer, s)
        return _row(self.name, layer, s, clean, torch.cat(after), blocks.drop_rates(shape), self.label)


def _live(settings: Sequence[Setting]) -> list[Setting]:
    """The settings that edit the feature map: a feature-map method below keep_prob 1."""
    return [s for s in settings if s.keep_prob < 1.0 and s.method in FEATURE_METHODS]


def _plain_logits(model, inputs: list[torch.Tensor], batch_size: int,
                  progress: Callable[[int], object] | None = None) -> torch.Tensor:
    """(len(inputs), K) float64 logits of plain passes of the (1, 3, S, S) ``inputs``, ``batch_size`` rows a
    pass (one pass per input where a batched pass fails or returns other than one row per input), in eval
    mode under ``torch.inference_mode()``. ``progress`` gets the count of inputs after the first done.

    Raises:
        ModelLoadError: a pass fails, or returns NaN or inf.
    """
    from dropblock.errors import one_line
    from dropblock.models import ModelLoadError, eval_mode

    net = model.module
    out = []
    with eval_mode(net), torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            chunk = torch.cat(inputs[start:start + batch_size])
            try:
                logits = net(chunk)
                if not torch.is_tensor(logits) or tuple(logits.shape[:1]) != (chunk.shape[0],) or logits.ndim != 2:
                    raise ValueError("not one row per input")
            except Exception:  # a model that takes one image at a time
                try:
                    logits = torch.cat([net(chunk[i:i + 1]) for i in range(chunk.shape[0])])
                except (Exception, SystemExit) as exc:
                    raise ModelLoadError(f"a forward pass of {model.spec} failed: "
                                         f"{one_line(exc, with_type=True, limit=160)}") from exc
            out.append(logits.detach().to("cpu", torch.float64))
            if progress is not None:
                progress(chunk.shape[0] - (start == 0))
    logits = torch.cat(out)
    if not bool(torch.isfinite(logits).all()):
        raise ModelLoadError(f"{model.spec} returns NaN or infinite logits with its input cut: check its weights")
    return logits


def _row(name: str, layer: str, s: Setting, clean, after, drop_rates: list[float], label: int | None) -> ImageRow:
    """The means over one setting's masks; ``after`` (N, K) float64 logits, ``clean`` (K,)."""
    from dropblock.effect import kl_divergence

    top1 = after.argmax(dim=-1)
    kl = float(kl_divergence(clean.expand_as(after), after).mean())  # exactly 0 where after is clean
    agreement = float((top1 == int(clean.argmax())).double().mean())
    accuracy = None if label is None else float((top1 == int(label)).double().mean())
    return ImageRow(name, layer, s, int(after.shape[0]), float(np.mean(drop_rates)), kl, agreement, accuracy)


def sweep_image(model, image: np.ndarray, layer: str | Sequence[str], settings: Sequence[Setting], **kw) -> list[ImageRow]:
    """One image through every setting at ``layer`` (a name, or several: each gets every setting), one row per
    (layer, setting) in that order: :func:`sweep_layers` (see it for the keywords)."""
    layers = [layer] if isinstance(layer, str) else list(layer)
    return sweep_layers(model, image, {name: list(settings) for name in layers}, **kw)
