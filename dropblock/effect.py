"""What a regularizer applied to one layer's output feature map does to a pretrained CNN's prediction.

:func:`layer_effect` runs the network once up to a layer, applies N masks of DropBlock, dropout or
Cutout to that layer's (1, C, h, w) activation as training would (kept units rescaled), runs the
rest of the network on the N edited copies (batched), and collects everything a figure, a table or
JSON needs in a :class:`LayerEffect`. Library code: nothing here prints.

Units: probabilities in [0, 1]; KL divergences in nats; block sizes and centres in feature-map
units (rows, columns of the h x w map).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from dropblock._checks import check_choice, check_positive_int, check_probability
from dropblock.functional import batch_rescale
from dropblock.methods import FEATURE_METHODS, MaskDraw, draw_mask
from dropblock.stats import MeanSE

if TYPE_CHECKING:
    from dropblock.models import LoadedModel

__all__ = ["Prediction", "FirstMask", "MaskStats", "LayerEffect", "MaskSeries", "MaskEdit", "counted", "top_k",
           "mask_scale", "apply_mask", "kl_divergence", "layer_effect", "effect_json", "TOP_CHANNELS", "TOP_K"]

TOP_K = 5
"""Predictions kept in ``predictions_before`` / ``predictions_after``."""
TOP_CHANNELS = 8
"""Channels (most active before) kept in ``channels_before`` / ``channels_after``."""
BATCH_SIZE = 16
"""Edited feature maps per pass through the rest of the network (bounds memory and progress lag)."""


@dataclass(frozen=True)
class Prediction:
    """One class of a prediction: ImageNet ``index``, its ``label`` and softmax ``prob``."""

    index: int
    label: str
    prob: float


def top_k(probs: torch.Tensor, k: int = TOP_K, names: list[str] | None = None) -> list[Prediction]:
    """The ``k`` most probable classes of ``probs`` (1000,) (softmax output), most probable first.

    ``names`` defaults to the ImageNet class names. Ties go to the lower index.
    """
    if names is None:
        from dropblock.models import class_names

        names = class_names()
    p = torch.as_tensor(probs).detach().reshape(-1).to("cpu", torch.float64)
    k = min(check_positive_int(k, "k"), p.numel())
    order = np.argsort(-p.numpy(), kind="stable")[:k]
    return [Prediction(int(i), names[int(i)], float(p[int(i)])) for i in order]


@dataclass(frozen=True)
class FirstMask:
    """Mask 1 of N: what ONE draw does, the one a figure shows (never a mean over the masks).

    keep: (C', h, w) bool, True where kept (C' = 1 when one mask is shared by all channels).
    centres: (K, 2) float64 (row, col) block centres (channel 0) or hole centres, in map units (None
    for dropout). scale: what kept units were multiplied by (:func:`mask_scale`).
    drop_rate: fraction of the (C, h, w) units this mask dropped.
    act_after: (h, w) float32, the channel-mean activation after this mask and its rescale.
    drop_fraction: (h, w) float32, the fraction of channels this mask dropped at each position.
    channels_after: (k, h, w) float32, the effect's ``top_channels`` after this mask.
    predictions_after: top-5 :class:`Prediction` list after this mask.
    kl: KL(before || after this mask) of the softmax outputs, nats.
    """

    keep: np.ndarray
    centres: np.ndarray | None
    scale: float
    drop_rate: float
    act_after: np.ndarray
    drop_fraction: np.ndarray
    channels_after: np.ndarray
    predictions_after: list[Prediction]
    kl: float


@dataclass(frozen=True)
class MaskStats:
    """What the ``samples`` masks say together, each a :class:`~dropblock.stats.MeanSE` over the masks.

    drop_rate: realized drop rate. kl: KL(before || after) in nats. prob_of_clean_top1: the probability
    after of the class that was top-1 before. top1_changed: 1 where the top-1 class differs from
    before, else 0. prob_of_top1_after: the probability of whatever class is top-1 after.
    """

    samples: int
    drop_rate: MeanSE
    kl: MeanSE
    prob_of_clean_top1: MeanSE
    top1_changed: MeanSE
    prob_of_top1_after: MeanSE


@dataclass
class LayerEffect:
    """What one regularizer on one layer's output does to one image's prediction.

    Setting: ``model``, ``layer`` (canonical names), ``feature_shape`` (C, H, W) of the layer's
    output, ``method`` (one of ``FEATURE_METHODS``), ``p`` (target drop rate), ``params`` (the method's
    parameters, from :class:`~dropblock.methods.MaskDraw`), ``gamma`` (DropBlock's seed
    probability, else None), ``expected_drop_rate`` (exact, of the mask distribution).

    The clean network: ``crop`` (S, S, 3) uint8, the image region the network sees (S: the model's
    input size); ``act_before`` (h, w) float32, the channel-mean activation; ``top_channels`` (k,)
    int64, the k most active channels (by mean activation), most active first; ``channels_before``
    (k, h, w) float32 of them; ``predictions_before``, the top-5 :class:`Prediction` list.

    ``first``: mask 1 of N alone (:class:`FirstMask`). ``stats``: all N masks (:class:`MaskStats`).
    ``draws``: every mask as ``(keep, scale)``, keep (1, C', h, w) bool on the drawing device (what
    :mod:`dropblock.cam` applies again).
    """

    model: str
    layer: str
    feature_shape: tuple[int, int, int]
    method: str
    p: float
    params: dict
    gamma: float | None
    expected_drop_rate: float
    crop: np.ndarray
    act_before: np.ndarray
    top_channels: np.ndarray
    channels_before: np.ndarray
    predictions_before: list[Prediction]
    first: FirstMask
    stats: MaskStats
    draws: list[tuple[torch.Tensor, float]] = field(default_factory=list, repr=False)

    @property
    def channel_keep(self) -> np.ndarray:
        """(k, h, w) bool: mask 1's keep of each of ``top_channels`` (the shared mask repeated when one
        mask serves every channel)."""
        keep = self.first.keep
        if keep.shape[0] == 1:
            return np.repeat(keep, len(self.top_channels), axis=0)
        return keep[self.top_channels]


def mask_scale(method: str, keep: torch.Tensor, p: float) -> float:
    """The factor training multiplies kept units by, for a ``keep`` mask of ``method`` at drop rate p.

    DropBlock: ``numel / kept`` of the mask (the batch rescale of the paper and torchvision; one
    sample here); dropout and spatial dropout: ``1 / (1 - p)``; Cutout: 1 (Cutout does not
    rescale). 1 when nothing is kept (every unit is then 0 anyway).
    """
    check_choice(method, "method", FEATURE_METHODS)
    kept = int(torch.count_nonzero(keep))
    if kept == 0 or method == "cutout":
        return 1.0
    if method == "dropblock":  # nothing dropped: the identity, as drop_block2d is at p = 0
        return 1.0 if kept == keep.numel() else float(batch_rescale(keep.numel(), kept))
    return 1.0 / (1.0 - float(p))


def apply_mask(feature: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
    """``feature * keep * scale``: (N, C, h, w) -> same shape; ``keep`` (N or 1, C or 1, h, w) bool.

    Kept units are exactly ``feature * scale`` (float32 product), dropped ones exactly 0.
    """
    keep = keep.to(feature.device)
    return torch.where(keep, feature * scale, torch.zeros((), dtype=feature.dtype, device=feature.device))


def kl_divergence(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(softmax(p) || softmax(q)) in nats, computed in float64: (..., K), (..., K) -> (...).

    Never negative (rounding below 0 is clipped); exactly 0 for identical logits.
    """
    lp = torch.log_softmax(logits_p.to(torch.float64), dim=-1)
    lq = torch.log_softmax(logits_q.to(torch.float64), dim=-1)
    return (lp.exp() * (lp - lq)).sum(dim=-1).clamp_min(0.0)


def layer_effect(
    model: LoadedModel | torch.nn.Module, image: np.ndarray, layer: str, method: str, p: float, *,
    block_size: int = 7, gamma: str | float = "paper", shared_channels: bool = False, samples: int = 1,
    seed: int = 0, device: str | torch.device = "cpu", progress: Callable[[int], object] | None = None,
) -> LayerEffect:
    """Apply ``samples`` masks of ``method`` to ``layer``'s output and measure the prediction's change.

    Args:
        model: a :class:`~dropblock.models.LoadedModel` (:func:`~dropblock.models.load_classifier`):
            its preprocessing makes the input, its class names label the predictions, its spec
            names it; or a built-in network from :func:`~dropblock.models.load_model`. Run in eval
            mode, restored after.
        image: (H, W, 3) uint8 RGB.
        layer: a ``named_modules`` name whose output is one (1, C, h, w) map, or a built-in's
            short layer name (see ``layer_table``).
        method: one of ``FEATURE_METHODS`` (``"dropblock"``, ``"dropout"``, ``"spatial-dropout"``,
            ``"cutout"``).
        p: target drop rate in [0, 1].
        block_size: DropBlock's block side in feature-map units (clipped to the map).
        gamma: DropBlock's ``"paper"`` (Equation 1), ``"exact"`` (expected drop rate exactly p) or a float.
        shared_channels: one mask for all channels (Cutout always shares).
        samples: N masks, drawn in order from one ``torch.Generator(device).manual_seed(seed)``
            (a :class:`MaskSeries`: mask i is the same whatever N).
        seed: the generator's seed; the same seed gives the same result.
        device: where masks are drawn (the generator's device); the model stays where it is.
        progress: called with 1 the first time each mask is applied.

    Raises:
        UnknownNameError: unknown layer name (close matches first).
        LayerError: the layer's output is not one (1, C, h, w) map.
        ModelLoadError: the model fails, or does not return (1, K) logits.
        ValueError: bad method, p, samples, block size or image.
    """
    from dropblock.models import as_loaded, forward_many, preprocess

    model = as_loaded(model)
    method = check_choice(method, "method", FEATURE_METHODS)
    p = check_probability(p)
    samples = check_positive_int(samples, "samples")
    block_size = check_positive_int(block_size, "block_size")
    x, crop = preprocess(model, image)
    series = MaskSeries(method, p, samples, block_size=block_size, gamma=gamma, shared_channels=shared_channels,
                        seed=seed, device=device)
    run = forward_many(model, x, layer, counted(series.edits(), progress), batch_size=BATCH_SIZE)
    return _summarize(run, series, model, crop)


class MaskSeries:
    """``n`` masks of ``method`` at drop rate ``p``, drawn in order from one ``torch.Generator(device)``
    seeded ``seed``, as ``n`` edits for :func:`~dropblock.models.forward_many` (kept units rescaled by
    :func:`mask_scale`, as training does).

    Mask i depends only on (seed, i, the map's shape), so each edit is a pure function of its input,
    whatever order, batching or repetition forward_many uses (mask 1 of 16 is the mask of 1). Per shape,
    one generator walks the masks in order, keeping the state before each (a few kB): edits called in
    order draw each mask once; a repeated call redraws from its state. Arguments are trusted.
    """

    def __init__(self, method: str, p: float, n: int, *, block_size: int, gamma: str | float,
                 shared_channels: bool, seed: int, device: str | torch.device) -> None:
        self.method, self.p, self.n, self.block_size, self.gamma = method, p, int(n), block_size, gamma
        self.shared_channels, self.seed, self.device = shared_channels, int(seed), torch.device(device)
        self._walks: dict[tuple[int, ...], tuple[torch.Generator, list[torch.Tensor], list[float]]] = {}

    def _draw(self, shape: tuple[int, ...], generator: torch.Generator) -> MaskDraw:
        return draw_mask(self.method, shape, self.p, block_size=self.block_size, gamma=self.gamma,
                         shared_channels=self.shared_channels, generator=generator, device=self.device)

    def draw(self, shape: tuple[int, ...], index: int) -> MaskDraw:
        """Mask ``index`` (0-based) for a (1, C, h, w) map of ``shape``."""
        shape = tuple(shape)
        if shape not in self._walks:
            self._walks[shape] = (torch.Generator(self.device).manual_seed(self.seed), [], [])
        walker, states, rates = self._walks[shape]
        if index < len(states):
            generator = torch.Generator(self.device)
            generator.set_state(states[index])
            return self._draw(shape, generator)
        while True:
            states.append(walker.get_state())
            draw = self._draw(shape, walker)
            rates.append(draw.drop_rate)
            if len(states) > index:
                return draw

    def draws(self, shape: tuple[int, ...]) -> list[MaskDraw]:
        """All n masks for a map of ``shape``, in order (memory grows with n)."""
        generator = torch.Generator(self.device).manual_seed(self.seed)
        return [self._draw(tuple(shape), generator) for _ in range(self.n)]

    def drop_rates(self, shape: tuple[int, ...]) -> list[float]:  # each mask's realized drop rate, in order
        if len(self._walks.get(tuple(shape), (None, [], []))[2]) < self.n:
            self.draw(shape, self.n - 1)
        return list(self._walks[tuple(shape)][2])

    def edits(self) -> list[MaskEdit]:
        return [MaskEdit(self, i) for i in range(self.n)]


@dataclass(frozen=True)
class MaskEdit:
    """Edit ``index`` of a :class:`MaskSeries`: (1, C, h, w) map -> the map times mask ``index`` and its scale."""

    series: MaskSeries
    index: int

    def __call__(self, feature: torch.Tensor) -> torch.Tensor:
        draw = self.series.draw(tuple(feature.shape), self.index)
        return apply_mask(feature, draw.keep, mask_scale(self.series.method, draw.keep, self.series.p))


def counted(edits: list[Callable], progress: Callable[[int], object] | None) -> list[Callable]:
    """``edits`` that call ``progress(1)`` the first time each runs (forward_many may run one twice, e.g.
    for a check; the count stays one per edit). Their results are the edits' own."""
    if progress is None:
        return list(edits)
    seen: set[int] = set()

    def tick(i: int, edit: Callable) -> Callable:
        def run(feature: torch.Tensor) -> torch.Tensor:
            out = edit(feature)
            if i not in seen:
                seen.add(i)
                progress(1)
            return out
        return run
    return [tick(i, edit) for i, edit in enumerate(edits)]


def _stats(probs_before: torch.Tensor, probs_after: torch.Tensor, kl: np.ndarray, drop_rates: list[float]) -> MaskStats:
    """Means ± SE over the N masks; probs_before (K,), probs_after (N, K) float64, kl (N,) nats."""
    clean_top1 = int(torch.argmax(probs_before))
    return MaskStats(
        samples=len(drop_rates), drop_rate=MeanSE.of(drop_rates), kl=MeanSE.of(kl),
        prob_of_clean_top1=MeanSE.of(probs_after[:, clean_top1].numpy()),
        top1_changed=MeanSE.of((torch.argmax(probs_after, dim=-1) != clean_top1).to(torch.float64).numpy()),
        prob_of_top1_after=MeanSE.of(probs_after.max(dim=-1).values.numpy()),
    )


def _summarize(run, series: MaskSeries, model: LoadedModel, crop: np.ndarray) -> LayerEffect:
    """The LayerEffect of a forward_many run of ``model`` whose edits were ``series``' (edit i in row i)."""
    shape = tuple(run.feature_before.shape)
    draws = series.draws(shape)
    scales = [mask_scale(series.method, d.keep, series.p) for d in draws]
    first = draws[0]
    before = run.feature_before[0].detach().to("cpu", torch.float32)
    after = apply_mask(run.feature_before, first.keep, scales[0])[0].detach().to("cpu", torch.float32)
    logits_before = run.logits_before[0].detach().to("cpu", torch.float64)
    logits_after = run.logits_after.detach().to("cpu", torch.float64)
    probs_before, probs_after = torch.softmax(logits_before, dim=-1), torch.softmax(logits_after, dim=-1)
    kl = kl_divergence(logits_before.expand_as(logits_after), logits_after).numpy()
    keep0 = first.keep[0].detach().to("cpu")
    order = torch.argsort(before.mean(dim=(1, 2)), descending=True, stable=True)[:min(TOP_CHANNELS, before.shape[0])]
    names = list(model.class_names)
    shown = FirstMask(
        keep=keep0.numpy().astype(bool), scale=float(scales[0]), drop_rate=float(first.drop_rate),
        centres=None if first.centres is None else first.centres.detach().to("cpu", torch.float64).numpy(),
        act_after=after.mean(dim=0).numpy(), drop_fraction=(~keep0).to(torch.float32).mean(dim=0).numpy(),
        channels_after=after[order].numpy(), predictions_after=top_k(probs_after[0], TOP_K, names), kl=float(kl[0]),
    )
    return LayerEffect(
        model=model.spec, layer=run.layer, feature_shape=tuple(int(v) for v in before.shape),
        method=series.method, p=series.p, params=dict(first.params), gamma=first.gamma,
        expected_drop_rate=float(first.expected_drop_rate), crop=crop, act_before=before.mean(dim=0).numpy(),
        top_channels=order.numpy().astype(np.int64), channels_before=before[order].numpy(),
        predictions_before=top_k(probs_before, TOP_K, names), first=shown,
        stats=_stats(probs_before, probs_after, kl, [d.drop_rate for d in draws]),
        draws=[(d.keep, s) for d, s in zip(draws, scales)],
    )


def _predictions_json(predictions: list[Prediction]) -> list[dict]:
    return [{"index": q.index, "label": q.label, "prob": q.prob} for q in predictions]


def effect_json(effect: LayerEffect) -> dict:
    """A JSON-ready dict of ``effect`` (no arrays; the CLI adds ``seed``).

    Keys: method, params, drop_rate_target, gamma, expected_drop_rate, realized_drop_rate,
    scale, model, layer, feature_shape [C, H, W], predictions_before, predictions_after (lists
    of {index, label, prob}), kl_divergence (nats): realized_drop_rate, scale, predictions_after and
    kl_divergence are mask 1's (``first``); samples; and when samples > 1 the statistics over all masks
    (``stats``) as {mean, se}: realized_drop_rate_stats, kl_divergence_stats,
    top1_before_prob_after_stats, top1_changed_fraction_stats, top1_after_prob_stats.
    """
    first, stats = effect.first, effect.stats
    out = {
        "method": effect.method,
        "params": dict(effect.params),
        "drop_rate_target": effect.p,
        "gamma": effect.gamma,
        "expected_drop_rate": effect.expected_drop_rate,
        "realized_drop_rate": first.drop_rate,
        "scale": first.scale,
        "model": effect.model,
        "layer": effect.layer,
        "feature_shape": list(effect.feature_shape),
        "predictions_before": _predictions_json(effect.predictions_before),
        "predictions_after": _predictions_json(first.predictions_after),
        "kl_divergence": first.kl,
        "samples": stats.samples,
    }
    if stats.samples > 1:
        out.update({
            "realized_drop_rate_stats": stats.drop_rate.as_dict(),
            "kl_divergence_stats": stats.kl.as_dict(),
            "top1_before_prob_after_stats": stats.prob_of_clean_top1.as_dict(),
            "top1_changed_fraction_stats": stats.top1_changed.as_dict(),
            "top1_after_prob_stats": stats.prob_of_top1_after.as_dict(),
        })
    return out
