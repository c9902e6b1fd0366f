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

__all__ = [
    "Prediction", "LayerEffect", "MaskEdit", "top_k", "mask_scale", "apply_mask", "kl_divergence",
    "layer_effect", "effect_json", "TOP_CHANNELS", "TOP_K",
]

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


@dataclass
class LayerEffect:
    """What one regularizer on one layer's output does to one image's prediction.

    Setting: ``model``, ``layer`` (canonical names), ``feature_shape`` (C, H, W) of the layer's
    output, ``method`` (one of ``FEATURE_METHODS``), ``p`` (target drop rate), ``params`` (the method's
    parameters, from :class:`~dropblock.methods.MaskDraw`), ``gamma`` (DropBlock's seed
    probability, else None), ``expected_drop_rate`` (exact, of the mask distribution).

    The first draw (what a figure shows):
        crop: (S, S, 3) uint8, the image region the network sees (S: the model's input size).
        keep: (C', h, w) bool, True where kept (C' = 1 when one mask is shared by all channels).
        centres: (K, 2) float64 (row, col) block centres (channel 0) or hole centres, in map
            units; None for dropout.
        scale: the factor kept units were multiplied by (DropBlock numel / kept, dropout
            1 / (1 - p), Cutout 1).
        realized_drop_rate: fraction of the (C, h, w) units dropped.
        act_before, act_after: (h, w) float32, the channel-mean activation before, and after the
            mask and rescale.
        drop_fraction: (h, w) float32, the fraction of channels dropped at each position.
        top_channels: (k,) int64, the k most active channels before (by mean activation), most
            active first; ``channels_before`` / ``channels_after``: (k, h, w) float32 of them.
        predictions_before, predictions_after: top-5 :class:`Prediction` lists.
        kl_divergence: KL(before || after) of the softmax outputs, nats.

    Over all ``samples`` draws (:class:`~dropblock.stats.MeanSE`, mean and standard error):
        drop_rate: realized drop rate; kl: KL(before || after) in nats; prob_of_clean_top1: the
        probability after of the class that was top-1 before; top1_changed: fraction of draws
        whose top-1 class differs from before; prob_of_top1_after: probability of whatever class
        is top-1 after.

    draws: every draw as ``(keep, scale)``: keep (1, C', h, w) bool on the drawing device, and the
    factor kept units were multiplied by (what :mod:`dropblock.cam` applies again).
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
    keep: np.ndarray
    centres: np.ndarray | None
    scale: float
    realized_drop_rate: float
    act_before: np.ndarray
    act_after: np.ndarray
    drop_fraction: np.ndarray
    top_channels: np.ndarray
    channels_before: np.ndarray
    channels_after: np.ndarray
    predictions_before: list[Prediction]
    predictions_after: list[Prediction]
    kl_divergence: float
    samples: int
    drop_rate: MeanSE
    kl: MeanSE
    prob_of_clean_top1: MeanSE
    top1_changed: MeanSE
    prob_of_top1_after: MeanSE
    draws: list[tuple[torch.Tensor, float]] = field(default_factory=list, repr=False)

    @property
    def channel_keep(self) -> np.ndarray:
        """(k, h, w) bool: the first draw's mask of each of ``top_channels`` (the shared mask
        repeated when one mask serves every channel)."""
        if self.keep.shape[0] == 1:
            return np.repeat(self.keep, len(self.top_channels), axis=0)
        return self.keep[self.top_channels]


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
        samples: N masks, drawn in order from one ``torch.Generator(device).manual_seed(seed)``.
        seed: the generator's seed; the same seed gives the same result.
        device: where masks are drawn (the generator's device); the model stays where it is.
        progress: called with 1 after each mask is drawn and applied (suffix passes are batched,
            so it may run up to one batch ahead of the forward passes).

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
    recorder = MaskEdit(method, p, block_size=block_size, gamma=gamma, shared_channels=shared_channels,
                        generator=torch.Generator(device).manual_seed(int(seed)), device=device, progress=progress)
    run = forward_many(model, x, layer, [recorder] * samples, batch_size=BATCH_SIZE)
    return _summarize(run, recorder, model, method, p, crop)


class MaskEdit:
    """An edit for :func:`~dropblock.models.forward_many`, called once per mask: draws a mask of
    ``method`` from ``generator`` on ``device`` and applies it as training would (kept units
    rescaled by :func:`mask_scale`).

    It records each draw's realized drop rate (``drop_rates``) and scale (``scales``), the first
    edited map (``first_after``) and, with ``keep_draws``, every draw (``draws``; memory grows with
    the masks). ``progress`` is called with 1 after each mask. Arguments are trusted: the public
    callers check them.
    """

    def __init__(self, method: str, p: float, *, block_size: int, gamma: str | float, shared_channels: bool,
                 generator: torch.Generator | None, device: str | torch.device,
                 progress: Callable[[int], object] | None = None, keep_draws: bool = True) -> None:
        self.method, self.p, self.block_size, self.gamma = method, p, block_size, gamma
        self.shared_channels, self.generator, self.device, self.progress = shared_channels, generator, device, progress
        self.keep_draws = keep_draws
        self.draws: list[MaskDraw] = []
        self.scales: list[float] = []
        self.drop_rates: list[float] = []
        self.first_after: torch.Tensor | None = None

    def __call__(self, feature: torch.Tensor) -> torch.Tensor:
        draw = draw_mask(self.method, tuple(feature.shape), self.p, block_size=self.block_size, gamma=self.gamma,
                         shared_channels=self.shared_channels, generator=self.generator, device=self.device)
        scale = mask_scale(self.method, draw.keep, self.p)
        after = apply_mask(feature, draw.keep, scale)
        if self.first_after is None:
            self.first_after = after
        if self.keep_draws or not self.draws:
            self.draws.append(draw)
        self.scales.append(scale)
        self.drop_rates.append(draw.drop_rate)
        if self.progress is not None:
            self.progress(1)
        return after


def _summarize(run, recorder: MaskEdit, model: LoadedModel, method: str, p: float,
               crop: np.ndarray) -> LayerEffect:
    """The LayerEffect of a forward_many run of ``model`` whose edits were ``recorder``."""
    before = run.feature_before[0].detach().to("cpu", torch.float32)
    after = recorder.first_after[0].detach().to("cpu", torch.float32)
    logits_before = run.logits_before[0].detach().to("cpu", torch.float64)
    logits_after = run.logits_after.detach().to("cpu", torch.float64)
    probs_before = torch.softmax(logits_before, dim=-1)
    probs_after = torch.softmax(logits_after, dim=-1)
    kl = kl_divergence(logits_before.expand_as(logits_after), logits_after).numpy()
    clean_top1 = int(torch.argmax(probs_before))
    first = recorder.draws[0]
    keep0 = first.keep[0].detach().to("cpu")
    order = torch.argsort(before.mean(dim=(1, 2)), descending=True, stable=True)[:min(TOP_CHANNELS, before.shape[0])]
    names = list(model.class_names)
    drop_rates = recorder.drop_rates
    return LayerEffect(
        model=model.spec, layer=run.layer, feature_shape=tuple(int(v) for v in before.shape),
        method=method, p=p, params=dict(first.params), gamma=first.gamma,
        expected_drop_rate=float(first.expected_drop_rate), crop=crop, keep=keep0.numpy().astype(bool),
        centres=None if first.centres is None else first.centres.detach().to("cpu", torch.float64).numpy(),
        scale=float(recorder.scales[0]), realized_drop_rate=float(drop_rates[0]),
        act_before=before.mean(dim=0).numpy(), act_after=after.mean(dim=0).numpy(),
        drop_fraction=(~keep0).to(torch.float32).mean(dim=0).numpy(),
        top_channels=order.numpy().astype(np.int64),
        channels_before=before[order].numpy(), channels_after=after[order].numpy(),
        predictions_before=top_k(probs_before, TOP_K, names), predictions_after=top_k(probs_after[0], TOP_K, names),
        kl_divergence=float(kl[0]), samples=len(recorder.draws),
        drop_rate=MeanSE.of(drop_rates), kl=MeanSE.of(kl),
        prob_of_clean_top1=MeanSE.of(probs_after[:, clean_top1].numpy()),
        top1_changed=MeanSE.of((torch.argmax(probs_after, dim=-1) != clean_top1).to(torch.float64).numpy()),
        prob_of_top1_after=MeanSE.of(probs_after.max(dim=-1).values.numpy()),
        draws=[(d.keep, s) for d, s in zip(recorder.draws, recorder.scales)],
    )


def _predictions_json(predictions: list[Prediction]) -> list[dict]:
    return [{"index": q.index, "label": q.label, "prob": q.prob} for q in predictions]


def effect_json(effect: LayerEffect) -> dict:
    """A JSON-ready dict of ``effect`` (no arrays; the CLI adds ``seed``).

    Keys: method, params, drop_rate_target, gamma, expected_drop_rate, realized_drop_rate,
    scale, model, layer, feature_shape [C, H, W], predictions_before, predictions_after (lists
    of {index, label, prob}), kl_divergence (first draw, nats), samples; and when samples > 1
    the statistics over all draws as {mean, se}: realized_drop_rate_stats, kl_divergence_stats,
    top1_before_prob_after_stats, top1_changed_fraction_stats, top1_after_prob_stats.
    """
    out = {
        "method": effect.method,
        "params": dict(effect.params),
        "drop_rate_target": effect.p,
        "gamma": effect.gamma,
        "expected_drop_rate": effect.expected_drop_rate,
        "realized_drop_rate": effect.realized_drop_rate,
        "scale": effect.scale,
        "model": effect.model,
        "layer": effect.layer,
        "feature_shape": list(effect.feature_shape),
        "predictions_before": _predictions_json(effect.predictions_before),
        "predictions_after": _predictions_json(effect.predictions_after),
        "kl_divergence": effect.kl_divergence,
        "samples": effect.samples,
    }
    if effect.samples > 1:
        out.update({
            "realized_drop_rate_stats": effect.drop_rate.as_dict(),
            "kl_divergence_stats": effect.kl.as_dict(),
            "top1_before_prob_after_stats": effect.prob_of_clean_top1.as_dict(),
            "top1_changed_fraction_stats": effect.top1_changed.as_dict(),
            "top1_after_prob_stats": effect.prob_of_top1_after.as_dict(),
        })
    return out
