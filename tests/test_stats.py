"""The confidence interval of every report."""
import math

import pytest

from metagreedy.stats import mean_ci95, t975

# scipy.stats.t.ppf(0.975, df)
EXACT = {1: 12.7062, 4: 2.7764, 9: 2.2622, 14: 2.1448, 15: 2.1314, 20: 2.0860, 30: 2.0423, 120: 1.9799, 599: 1.9639}


@pytest.mark.parametrize("df", sorted(EXACT))
def test_t_quantile(df):
    assert t975(df) == pytest.approx(EXACT[df], abs=1e-3)


def test_mean_ci95():
    mean, half = mean_ci95([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.3027 * 1.0 / math.sqrt(3), rel=1e-4)
    assert math.isnan(mean_ci95([0.5])[1]) and mean_ci95([0.5])[0] == 0.5
    assert all(math.isnan(x) for x in mean_ci95([]))
