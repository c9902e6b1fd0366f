"""Figures of ``show --layer`` and ``compare --layer``: a regularizer on a CNN's feature maps."""

from __future__ import annotations

from dropblock.image_views import NAMES, describe


def _params(e) -> str:
    return describe(e.method, e.params, e.gamma, unit="cells")


def feature_show_figure(e, image_name: str):
    """figure_feature_show for one LayerEffect: overlays, top channels, top-5 before and after."""
    from dropblock.viz import figure_feature_show

    c, h, w = e.feature_shape
    titles = {
        "image": f"{image_name}: mean activation of {e.layer} ({c}x{h}x{w})",
        "mask": f"{NAMES[e.method]} mask: {_params(e)}; dropped {100 * e.realized_drop_rate:.1f}% "
                f"(target {100 * e.p:g}%)",
        "after": f"mean activation after {NAMES[e.method]}",
        "channels": "most active channels: before (top), after (bottom)",
        "before_preds": "top-5 before",
        "after_preds": f"top-5 after (KL {e.kl_divergence:.3g} nats)",
    }
    return figure_feature_show(
        e.crop, e.act_before, e.act_after, e.drop_fraction,
        top_channels_before=e.channels_before, top_channels_after=e.channels_after,
        preds_before=[(q.label, q.prob) for q in e.predictions_before],
        preds_after=[(q.label, q.prob) for q in e.predictions_after],
        titles=titles, channel_ids=[int(i) for i in e.top_channels], method=e.method,
        suptitle=f"{e.model}, layer {e.layer}",
    )


def feature_compare_figure(effects: list, image_name: str):
    """figure_feature_compare: one column per method at the same target drop rate."""
    from dropblock.viz import FeatureColumn, figure_feature_compare

    cols = []
    for e in effects:
        top = e.predictions_after[0]
        cols.append(FeatureColumn(
            method=e.method, drop_fraction=e.drop_fraction, act_after=e.act_after, top1_label=top.label,
            top1_prob=top.prob,
            title=f"{NAMES[e.method]}: {_params(e)}\ndropped {100 * e.realized_drop_rate:.1f}%, KL {e.kl_divergence:.3g}",
        ))
    e0 = effects[0]
    c, h, w = e0.feature_shape
    before = e0.predictions_before[0]
    return figure_feature_compare(
        e0.crop, cols,
        suptitle=f"{image_name} on {e0.model} {e0.layer} ({c}x{h}x{w}), target drop rate {100 * e0.p:g}%; "
                 f"before: {before.label} {100 * before.prob:.1f}%",
    )
