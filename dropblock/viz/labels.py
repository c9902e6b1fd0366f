"""How tables and figures name the methods and their parameters (plain text; no matplotlib, no torch)."""

from __future__ import annotations

METHOD_LABELS = {"dropblock": "DropBlock", "dropout": "Dropout", "spatial-dropout": "Spatial dropout", "cutout": "Cutout",
                 "cutout-input": "Input Cutout", "cutout-input+dropblock": "Input Cutout + DropBlock"}


def describe(method: str, params: dict, gamma: float | None, unit: str = "px") -> str:
    """Short text of a mask's parameters (``MaskDraw.params``), e.g. 'block 38 px, γ=8.61e-05 (paper)'."""
    if method == "dropblock":
        bh, bw = params["block"]
        block = f"{bh} {unit}" if bh == bw else f"{bh}x{bw} {unit}"
        return f"block {block}, γ={gamma:.3g} ({params['gamma_mode']})"
    if method == "cutout":
        n = params["n_holes"]
        return f"{n} hole{'s' if n > 1 else ''} of {params['length']} {unit}"
    if method == "spatial-dropout":
        return "whole channels independently"
    return "each unit independently"
