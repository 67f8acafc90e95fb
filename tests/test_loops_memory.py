"""Greedy attached to a researcher's own loop keeps its memory as T grows (bench/loops.py: a model with
994,760 adapted parameters; one process per loop, T = 5 then T = 100), where the same loop
differentiated in full grows (slow)."""
import pytest

from bench import loops

MIB = 2**20


def added(r: dict) -> float:
    return (r["peak_rss"] - r["rss_before"]) / MIB


@pytest.mark.parametrize("loop", loops.LOOPS)
def test_greedy_in_the_researchers_loop_needs_no_more_memory_at_T_100_than_at_T_5(loop):
    if loop != "plain":
        pytest.importorskip(loop)
    at5, at100 = loops.measure(loop, "greedy", [5, 100], examples=16)
    assert added(at100) <= 1.10 * added(at5), (added(at5), added(at100))


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["plain", "learn2learn"])  # higher's full unroll takes minutes at T = 100
def test_the_same_loop_differentiated_in_full_grows_with_T(loop):
    at5, at100 = loops.measure(loop, "full", [5, 100], examples=16)
    assert added(at100) >= 2 * added(at5), (added(at5), added(at100))
