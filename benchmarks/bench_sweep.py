"""`dropblock sweep`'s cost: its time per pass through the rest of the network, against a bare batched pass
of the same batch size on the same layer's activation, i.e. what drawing masks, applying them and the
bookkeeping add; at one layer (issue 11) and at 2 and 8 layers of one sweep (issue 19). Also (issue 19) images
whose few edits share a pass, against the same images one by one and a bare pass of the same rows, and, on a
GPU, images per second of the default grid. Timed in one run with the interleaved medians of bench_masks.
"""

from __future__ import annotations

from pathlib import Path

import torch
from rich.table import Table

from bench_masks import Settings, fmt_ms, fmt_x, interleaved_medians, ratio

IMAGE = Path(__file__).resolve().parent.parent / "sample_images" / "chelsea.jpg"
SWEEP_MODEL, SWEEP_BATCH, SWEEP_MASKS = "efficientnet-lite0", 32, 16
# (layers, goal): issue 11's goal at one layer, issue 19's at 2 and at 8 layers of one sweep
SWEEP_CASES = [(("blocks.8",), 1.25), (("blocks.8", "blocks.12"), 1.15),
               (tuple(f"blocks.{i}" for i in range(8, 16)), 1.15)]


def layer_sweep_row(s: Settings, layers: tuple[str, ...] = SWEEP_CASES[0][0], settings: list | None = None) -> dict:
    """Median ms of one image's sweep over ``layers`` (by default 10 settings x 16 masks per layer = 5 passes of 32
    each, plus each layer's unedited row, the prefix once per pass) and of the same bare suffix passes (5 per
    layer, 32 rows, no masks), interleaved; the ratio is the sweep's cost per suffix pass over the bare one."""
    import numpy as np
    from PIL import Image

    from dropblock.models import layer_module, load_model, preprocess
    from dropblock.sweep import settings_grid
    from dropblock.sweep_engine import sweep_layers

    net = load_model(SWEEP_MODEL, device=s.device)
    with Image.open(IMAGE) as im:
        pixels = np.asarray(im.convert("RGB"))
    settings = settings or settings_grid(["dropblock", "dropout", "spatial-dropout", "cutout"], [1, 7], [0.9, 0.8])
    live = [st for st in settings if st.keep_prob < 1.0]
    passes = -(-len(live) * SWEEP_MASKS // SWEEP_BATCH)
    x, _ = preprocess(SWEEP_MODEL, pixels)
    x = x.to(s.device)
    batches = {}
    with torch.inference_mode():
        for layer in layers:
            seen = []
            handle = layer_module(net, layer).register_forward_hook(lambda m, a, out: seen.append(out))
            net(x)
            handle.remove()
            batches[layer] = seen[0].expand(SWEEP_BATCH, -1, -1, -1).contiguous()

    def bare(_):  # forward hooks returning the batch: the prefix once, the rest on SWEEP_BATCH rows
        for layer, batch in batches.items():
            handle = layer_module(net, layer).register_forward_hook(lambda m, a, out, batch=batch: batch)
            try:
                with torch.inference_mode():
                    for _ in range(passes):
                        net(x)
            finally:
                handle.remove()

    def sweep(_):
        sweep_layers(net, pixels, {layer: settings for layer in layers}, masks=SWEEP_MASKS, seed=0,
                     content="bench", device=s.device, batch_size=SWEEP_BATCH)

    ms = interleaved_medians({"sweep": sweep, "bare suffix": bare}, x, s)
    return {"model": SWEEP_MODEL, "layers": list(layers), "feature": list(batches[layers[0]].shape[1:]),
            "batch": SWEEP_BATCH, "settings": len(settings), "masks": SWEEP_MASKS, "passes": passes * len(layers),
            "ms": ms, "sweep/bare": ratio(ms.get("sweep"), ms.get("bare suffix"))}


def layer_sweep_rows(s: Settings) -> list[dict]:
    """:func:`layer_sweep_row` for each of SWEEP_CASES, with its goal."""
    return [layer_sweep_row(s, layers) | {"goal": goal} for layers, goal in SWEEP_CASES]


def layer_sweep_table(rows: list[dict], s: Settings) -> Table:
    """The sweep rows as a table."""
    first = rows[0]
    table = Table(title=f"Sweep: {first['model']}, {first['settings']} settings x {first['masks']} masks per layer = "
                        f"passes of {first['batch']}, {s.device}, median ms of {s.repeats}", title_justify="left")
    for col in ("layers", "passes", "sweep (one image)", "bare suffix passes", "per pass: sweep / bare", "goal"):
        table.add_column(col, justify="left" if col == "layers" else "right")
    for row in rows:
        names = row["layers"]
        label = names[0] if len(names) == 1 else f"{len(names)}: {names[0]} .. {names[-1]}"
        table.add_row(label, str(row["passes"]), fmt_ms(row["ms"].get("sweep")), fmt_ms(row["ms"].get("bare suffix")),
                      fmt_x(row["sweep/bare"]), f"<= {row['goal']}x")
    return table


def layer_sweep_goals(rows: list[dict]) -> list[dict]:
    """One goal row per case: the sweep's cost per suffix pass over a bare one."""
    goals = []
    for row in rows:
        value, n = row["sweep/bare"], len(row["layers"])
        goals.append({"goal": f"sweep per suffix pass at {n} layer{'s' * (n > 1)} <= {row['goal']}x a bare batched "
                              "suffix pass", "value": value, "unit": "x",
                      "passed": None if value is None else value <= row["goal"],
                      "note": "" if value is not None else "not measured"})
    return goals


GROUP_IMAGES = ("chelsea.jpg", "coffee.jpg", "astronaut.jpg", "chelsea.jpg")
GROUP_LAYER = "blocks.8"


def _photos(names) -> list:
    import numpy as np
    from PIL import Image

    out = []
    for i, name in enumerate(names):
        with Image.open(IMAGE.parent / name) as im:
            pixels = np.asarray(im.convert("RGB"))
        out.append(pixels[:, ::-1].copy() if i >= 3 else pixels)  # a 4th image: the first mirrored
    return out


def shared_pass_row(s: Settings) -> dict:
    """Median ms of 4 images' sweep at one layer with few edits (DropBlock 7 and dropout at keep 0.9, 3 masks:
    6 edits an image, so 4 images fill a pass of 28 rows): sharing one pass (sweep_group), one image after
    the other (sweep_layers), and a bare pass of the same rows (the 4 images' prefix, a hook returning 28
    rows). The GPU goal: sharing >= 80 % of the bare pass's throughput (shared / bare <= 1.25)."""
    from dropblock.models import layer_module, load_model, preprocess
    from dropblock.sweep import settings_grid
    from dropblock.sweep_engine import ImageInput, images_per_pass, sweep_group, sweep_layers

    net = load_model(SWEEP_MODEL, device=s.device)
    settings, masks = settings_grid(["dropblock", "dropout"], [7], [0.9]), 3
    images = [ImageInput(p, f"bench{i}") for i, p in enumerate(_photos(GROUP_IMAGES))]
    assert images_per_pass(settings, masks) == len(images)
    x = torch.cat([preprocess(SWEEP_MODEL, im.pixels)[0] for im in images]).to(s.device)
    rows = len(images) * (1 + masks * len(settings))
    with torch.inference_mode():
        seen = []
        handle = layer_module(net, GROUP_LAYER).register_forward_hook(lambda m, a, out: seen.append(out))
        net(x)
        handle.remove()
    batch = seen[0].repeat_interleave(rows // len(images), dim=0)
    todo = {GROUP_LAYER: settings}

    def bare(_):
        handle = layer_module(net, GROUP_LAYER).register_forward_hook(lambda m, a, out: batch)
        try:
            with torch.inference_mode():
                net(x)
        finally:
            handle.remove()

    def shared(_):
        sweep_group(net, images, todo, masks=masks, seed=0, device=s.device)

    def apart(_):
        for im in images:
            sweep_layers(net, im.pixels, todo, masks=masks, seed=0, content=im.content, device=s.device)

    ms = interleaved_medians({"shared": shared, "apart": apart, "bare": bare}, x, s)
    return {"model": SWEEP_MODEL, "layer": GROUP_LAYER, "images": len(images), "rows": rows, "ms": ms,
            "device": s.device, "shared/bare": ratio(ms.get("shared"), ms.get("bare")),
            "shared/apart": ratio(ms.get("shared"), ms.get("apart"))}


def default_grid_row(s: Settings) -> dict:
    """Images per second of one image's sweep over the default grid at one layer (7 series x 6 keep_probs x 16
    masks = 672 edits in passes of 32), against the same bare suffix passes: :func:`layer_sweep_row` with the
    CLI's default settings."""
    from dropblock.sweep import DEFAULT_BLOCK_SIZES, DEFAULT_KEEP_PROBS, settings_grid

    settings = settings_grid(["dropblock", "dropout", "spatial-dropout", "cutout"], DEFAULT_BLOCK_SIZES,
                             DEFAULT_KEEP_PROBS)
    row = layer_sweep_row(s, (GROUP_LAYER,), settings)
    ms = row["ms"].get("sweep")
    return row | {"images/s": 1000.0 / ms if isinstance(ms, float) else None, "device": s.device}


def group_goals(shared: dict | None, grid: dict | None) -> list[dict]:
    """The GPU goals of issue 19 (reported, not judged, on the CPU)."""
    goals = []
    for row, key, what in ((shared, "shared/bare", "4 images sharing a pass"), (grid, "sweep/bare", "default grid")):
        if row is None:
            continue
        value = row[key]
        on_gpu = row.get("device", "cpu") != "cpu"
        goals.append({"goal": f"{what}: >= 80 % of a bare batched pass's throughput (time <= 1.25x)", "value": value,
                      "unit": "x", "passed": None if value is None or not on_gpu else value <= 1.25,
                      "note": "a GPU goal: reported only" if not on_gpu else ""})
    return goals


def group_table(shared: dict, grid: dict | None, s: Settings) -> Table:
    """The shared-pass row, and the default grid's when measured, as a table."""
    table = Table(title=f"Sweep, issue 19's GPU goals: {shared['model']} {shared['layer']}, {s.device}, median ms of "
                        f"{s.repeats}", title_justify="left")
    for col in ("case", "sweep", "one by one", "bare batched", "sweep / bare", "shared / one by one", "images/s"):
        table.add_column(col, justify="left" if col == "case" else "right")
    ms = shared["ms"]
    table.add_row(f"{shared['images']} images sharing a pass of {shared['rows']} rows", fmt_ms(ms.get("shared")),
                  fmt_ms(ms.get("apart")), fmt_ms(ms.get("bare")), fmt_x(shared["shared/bare"]),
                  fmt_x(shared["shared/apart"]), "")
    if grid is not None:
        rate = grid["images/s"]
        table.add_row(f"default grid, one image ({grid['passes']} passes of {grid['batch']})",
                      fmt_ms(grid["ms"].get("sweep")), "", fmt_ms(grid["ms"].get("bare suffix")),
                      fmt_x(grid["sweep/bare"]), "", "" if rate is None else f"{rate:.2f}")
    return table
