"""`dropblock sweep`'s cost: its time per pass through the rest of the network, against a bare batched pass
of the same batch size on the same layer's activation, i.e. what drawing masks, applying them and the
bookkeeping add; at one layer (issue 11) and at 2 and 8 layers of one sweep (issue 19). Timed in one run with the interleaved medians of bench_masks.
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


def layer_sweep_row(s: Settings, layers: tuple[str, ...] = SWEEP_CASES[0][0]) -> dict:
    """Median ms of one image's sweep over ``layers`` (10 settings x 16 masks per layer = 5 passes of 32 each,
    plus each layer's unedited row, the prefix once per pass) and of the same bare suffix passes (5 per layer,
    32 rows, no masks), interleaved; the ratio is the sweep's cost per suffix pass over the bare one."""
    import numpy as np
    from PIL import Image

    from dropblock.models import layer_module, load_model, preprocess
    from dropblock.sweep import settings_grid
    from dropblock.sweep_engine import sweep_layers

    net = load_model(SWEEP_MODEL, device=s.device)
    with Image.open(IMAGE) as im:
        pixels = np.asarray(im.convert("RGB"))
    settings = [st for st in settings_grid(["dropblock", "dropout", "spatial-dropout", "cutout"], [1, 7], [0.9, 0.8])]
    passes = len(settings) * SWEEP_MASKS // SWEEP_BATCH
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
