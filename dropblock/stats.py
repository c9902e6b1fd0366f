"""One type for "mean ± standard error", used by every measurement in the library."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MeanSE:
    """A mean over ``n`` values and its standard error ``se = std / sqrt(n)`` (sample std, ddof 1;
    0 when n == 1). The unit is the values' own (a fraction, nats, ...)."""

    mean: float
    se: float
    n: int

    @classmethod
    def of(cls, values) -> MeanSE:
        """Mean and standard error of ``values`` (any shape, flattened; at least one value)."""
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        if v.size == 0:
            raise ValueError("MeanSE.of needs at least one value")
        se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else 0.0
        return cls(float(v.mean()), se, int(v.size))

    @classmethod
    def from_sums(cls, n: int, total: float, total_sq: float) -> MeanSE:
        """From the count, sum and sum of squares of the values (for streaming accumulation)."""
        mean = total / n
        var = max(total_sq / n - mean * mean, 0.0) * n / max(n - 1, 1)
        return cls(mean, math.sqrt(var / n), n)

    def as_dict(self) -> dict[str, float]:
        """``{"mean": ..., "se": ...}`` for JSON."""
        return {"mean": self.mean, "se": self.se}
