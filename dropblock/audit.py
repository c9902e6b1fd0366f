"""The gamma audit behind ``dropblock gamma``: Equation 1, the exact expectation, measured masks and
the public conventions for one setting, or a sweep of settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from dropblock._checks import check_choice, check_map_size, check_positive_int, check_probability
from dropblock.conventions import CONVENTIONS, ConventionRate
from dropblock.gamma import GAMMA_MODES, expected_drop_rate_unchecked, gamma_exact_unchecked, gamma_paper_unchecked
from dropblock.measure import Progress, measure_calls, measure_masks
from dropblock.stats import MeanSE


@dataclass(frozen=True)
class ImplResult:
    """An installed DropBlock function measured on real tensors."""

    spec: str
    measurement: MeanSE


@dataclass(frozen=True)
class GammaAudit:
    """Everything ``dropblock gamma`` reports for one target drop rate p, block and H x W map.

    ``expected_drop_rate`` is for the gamma in use (``gamma_mode``); ``measured`` is None when
    no masks were drawn.
    """

    p: float
    block_size: int
    block: tuple[int, int]
    height: int
    width: int
    gamma_mode: str
    gamma_paper: float
    gamma_exact: float
    expected_drop_rate: float
    expected_drop_rate_paper: float
    measured: MeanSE | None
    conventions: list[ConventionRate]
    impls: list[ImplResult] = field(default_factory=list)

    @property
    def gamma(self) -> float:
        """The gamma in use."""
        return self.gamma_exact if self.gamma_mode == "exact" else self.gamma_paper

    @property
    def clipped(self) -> bool:
        """The block was larger than the map and clipped to it."""
        return self.block != (self.block_size, self.block_size)


def audit_gamma(
    p: float, block_size: int, height: int, width: int, *,
    gamma_mode: str = "paper", samples: int = 0, seed: int | None = 0, device: str = "cpu",
    impls: list[tuple[str, Callable]] | None = None, progress: Progress | None = None,
) -> GammaAudit:
    """Compute the audit; draws ``samples`` masks (0: none) for this library and each impl."""
    p = check_probability(p)
    block_size = check_positive_int(block_size, "block_size")
    height, width = check_map_size(height, width)
    check_choice(gamma_mode, "gamma_mode", GAMMA_MODES)
    if samples != 0:
        samples = check_positive_int(samples, "samples")
    g_paper = gamma_paper_unchecked(p, block_size, height, width)
    g_exact = gamma_exact_unchecked(p, block_size, height, width)
    expected_paper = expected_drop_rate_unchecked(g_paper, block_size, height, width)
    measured, results = None, []
    if samples > 0:
        g = g_exact if gamma_mode == "exact" else g_paper
        measured = measure_masks(g, block_size, height, width, samples=samples, seed=seed, device=device,
                                 progress=progress)
        results = [ImplResult(spec, measure_calls(fn, p, block_size, height, width, samples=samples, seed=seed,
                                                  device=device, progress=progress, name=spec))
                   for spec, fn in impls or []]
    return GammaAudit(
        p, block_size, (min(block_size, height), min(block_size, width)), height, width, gamma_mode, g_paper,
        g_exact, p if gamma_mode == "exact" else expected_paper, expected_paper, measured,
        [rate(p, block_size, height, width) for rate in CONVENTIONS.values()], results,
    )


def audit_json(a: GammaAudit) -> dict:
    """The audit as plain JSON-able data (None for what was not measured or is unsupported)."""
    m = a.measured
    return {
        "drop_rate_target": a.p,
        "keep_prob": 1.0 - a.p,
        "feature_size": [a.height, a.width],
        "block_size": a.block_size,
        "block": list(a.block),
        "gamma_mode": a.gamma_mode,
        "gamma": a.gamma,
        "gamma_paper": a.gamma_paper,
        "gamma_exact": a.gamma_exact,
        "expected_drop_rate": a.expected_drop_rate,
        "expected_drop_rate_paper_gamma": a.expected_drop_rate_paper,
        "empirical_drop_rate": None if m is None else m.mean,
        "empirical_se": None if m is None else m.se,
        "samples": 0 if m is None else m.n,
        "conventions": {c.name: c.drop_rate for c in a.conventions},
        "convention_gammas": {c.name: c.gamma for c in a.conventions},
        "convention_notes": {c.name: c.note for c in a.conventions if c.note},
        "impls": {
            r.spec: {"empirical_drop_rate": r.measurement.mean, "empirical_se": r.measurement.se,
                     "samples": r.measurement.n}
            for r in a.impls
        },
    }


def sweep_values(kind: str, block_size: int, height: int, width: int) -> list[int]:
    """Default sweep: block sizes 1 .. max(H, W), or square feature sizes block_size .. max(H, W, 4 * block_size)."""
    if kind == "block-size":
        return list(range(1, max(height, width) + 1))
    if kind == "feature-size":
        return list(range(block_size, max(height, width, 4 * block_size) + 1))
    raise ValueError(f"sweep must be 'block-size' or 'feature-size', got {kind!r}")
