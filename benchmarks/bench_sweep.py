"""`dropblock sweep`'s cost (issue 11): its time per pass through the rest of the network, against a bare
batched pass of the same batch size on the same layer's activation, i.e. what drawing masks, applying
them and the bookkeeping add. Timed in one run with the interleaved medians of bench_masks.
"""

from __future__ import annotations

from pathlib import Path

import torch
from rich.table import Table

from bench_masks import Settings, fmt_ms, fmt_x, interleaved_medians, ratio

IMAGE = Path(__file__).resolve().parent.parent / "sample_images" / "chelsea.jpg"
SWEEP_MODEL, SWEEP_LAYER, SWEEP_BATCH, SWEEP_MASKS = "efficientnet-lite0", "blocks.8", 32, 16
SWEEP_GOAL = 1.25


def layer_sweep_row(s: Settings) -> dict:
    """Median ms of one image's sweep (10 settings x 16 masks = 5 passes of 32, the prefix once) and of
    5 bare suffix passes of 32, interleaved; the ratio is the sweep's cost per suffix pass over the bare one."""
    import numpy as np
    from PIL import Image

    from dropblock.models import layer_module, load_model, preprocess
    from dropblock.sweep import settings_grid
    from dropblock.sweep_engine import sweep_image

    net = load_model(SWEEP_MODEL, device=s.device)
    with Image.open(IMAGE) as im:
        pixels = np.asarray(im.convert("RGB"))
    settings = [st for st in settings_grid(["dropblock", "dropout", "spatial-dropout", "cutout"], [1, 7], [0.9, 0.8])]
    passes = len(settings) * SWEEP_MASKS // SWEEP_BATCH
    x, _ = preprocess(SWEEP_MODEL, pixels)
    module, x = layer_module(net, SWEEP_LAYER), x.to(s.device)
    with torch.inference_mode():
        feature = {}
        handle = module.register_forward_hook(lambda m, a, out: feature.setdefault("map", out))
        net(x)
        handle.remove()
        feature = feature["map"]
        batch = feature.expand(SWEEP_BATCH, -1, -1, -1).contiguous()

    def bare(_):  # a forward hook returning the batch: the prefix once, the rest on SWEEP_BATCH rows
        handle = module.register_forward_hook(lambda m, a, out: batch)
        try:
            with torch.inference_mode():
                for _ in range(passes):
                    net(x)
        finally:
            handle.remove()

    def sweep(_):
        sweep_image(net, pixels, SWEEP_LAYER, settings, masks=SWEEP_MASKS, seed=0, content="bench",
                    device=s.device, batch_size=SWEEP_BATCH)

    ms = interleaved_medians({"sweep": sweep, "bare suffix": bare}, batch, s)
    return {"model": SWEEP_MODEL, "layer": SWEEP_LAYER, "feature": list(feature.shape[1:]), "batch": SWEEP_BATCH,
            "settings": len(settings), "masks": SWEEP_MASKS, "passes": passes, "ms": ms,
            "sweep/bare": ratio(ms.get("sweep"), ms.get("bare suffix"))}


def layer_sweep_table(row: dict, s: Settings) -> Table:
    """The sweep row as a table."""
    table = Table(title=f"Sweep: {row['model']} {row['layer']} ({'x'.join(map(str, row['feature']))}), "
                        f"{row['settings']} settings x {row['masks']} masks = {row['passes']} passes of {row['batch']}, "
                        f"{s.device}, median ms of {s.repeats}", title_justify="left")
    for col in ("sweep (one image)", f"{row['passes']} bare suffix passes", "per pass: sweep / bare"):
        table.add_column(col, justify="right")
    table.add_row(fmt_ms(row["ms"].get("sweep")), fmt_ms(row["ms"].get("bare suffix")), fmt_x(row["sweep/bare"]))
    return table


def layer_sweep_goal(row: dict) -> dict:
    """The goal row: the sweep's cost per suffix pass over a bare one, at most SWEEP_GOAL."""
    value = row["sweep/bare"]
    return {"goal": f"sweep per suffix pass <= {SWEEP_GOAL}x a bare batched suffix pass", "value": value, "unit": "x",
            "passed": None if value is None else value <= SWEEP_GOAL, "note": "" if value is not None else "not measured"}
