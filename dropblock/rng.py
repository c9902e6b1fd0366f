"""torch's random generators, as the library makes and finds them: seeded ones and the defaults.

Torch only (no NumPy, no other module of the package but the argument checks), so that every module
that draws (``sampling``, ``_triton``, ``ops``, ``functional``) can import it without a cycle.
"""

from __future__ import annotations

import torch

from dropblock._checks import check_seed


def make_generator(seed: int | None, device: torch.device | str) -> torch.Generator | None:
    """A generator on ``device`` seeded with ``seed`` (an integer in [0, 2**64 - 1], else ValueError);
    None when seed is None (torch's default RNG)."""
    if seed is None:
        return None
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(check_seed(seed))
    return gen


def default_generator(device: torch.device) -> torch.Generator:
    """torch's default generator for ``device`` (the one ``torch.manual_seed`` seeds)."""
    if device.type == "cuda":
        return torch.cuda.default_generators[torch.cuda.current_device() if device.index is None else device.index]
    if device.type == "cpu":
        return torch.default_generator
    gens = getattr(getattr(torch, device.type, None), "default_generators", None)  # e.g. torch.xpu
    if not gens:
        raise RuntimeError(f"no default torch generator known for {device}: pass generator=")
    return gens[device.index or 0]
