"""The one confidence interval used in logs and reports."""
from __future__ import annotations

import math

_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145}


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom: a table to 14, then the
    Cornish-Fisher expansion around the normal quantile (within 1e-3 of the exact value from 15 on)."""
    if df in _T975:
        return _T975[df]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean_ci95(values) -> tuple[float, float]:
    """Mean and the half-width of the 95% confidence interval of the mean (Student's t); the
    half-width is nan for fewer than two values, and both are nan for none."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, t975(n - 1) * sd / math.sqrt(n)
