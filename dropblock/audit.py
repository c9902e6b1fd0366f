"""The gamma audit behind ``dropblock gamma``: Equation 1, the exact expectation, measured masks and
the public conventions for one setting, or a sweep of settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from dropblock.errors import UsageError
from dropblock._checks import check_choice, check_map_size, check_positive_int, check_probability, check_seed
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
    seed = None if seed is None else check_seed(seed)
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


def audit_json(audit: GammaAudit) -> dict:
    """The audit as plain JSON-able data (None for what was not measured or is unsupported)."""
    measured = audit.measured
    return {
        "drop_rate_target": audit.p,
        "keep_prob": 1.0 - audit.p,
        "feature_size": [audit.height, audit.width],
        "block_size": audit.block_size,
        "block": list(audit.block),
        "gamma_mode": audit.gamma_mode,
        "gamma": audit.gamma,
        "gamma_paper": audit.gamma_paper,
        "gamma_exact": audit.gamma_exact,
        "expected_drop_rate": audit.expected_drop_rate,
        "expected_drop_rate_paper_gamma": audit.expected_drop_rate_paper,
        "empirical_drop_rate": None if measured is None else measured.mean,
        "empirical_se": None if measured is None else measured.se,
        "samples": 0 if measured is None else measured.n,
        "conventions": {conv.name: conv.drop_rate for conv in audit.conventions},
        "convention_gammas": {conv.name: conv.gamma for conv in audit.conventions},
        "convention_notes": {conv.name: conv.note for conv in audit.conventions if conv.note},
        "impls": {
            impl.spec: {"empirical_drop_rate": impl.measurement.mean, "empirical_se": impl.measurement.se,
                     "samples": impl.measurement.n}
            for impl in audit.impls
        },
    }


def sweep_values(kind: str, block_size: int, height: int, width: int) -> list[int]:
    """Default sweep: block sizes 1 .. max(H, W), or square feature sizes block_size .. max(H, W, 4 * block_size)."""
    if kind == "block-size":
        return list(range(1, max(height, width) + 1))
    if kind == "feature-size":
        return list(range(block_size, max(height, width, 4 * block_size) + 1))
    raise UsageError(f"sweep must be 'block-size' or 'feature-size', got {kind!r}")
