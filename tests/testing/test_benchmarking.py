"""The in-run A/B harness of foundry_ext.testing.benchmarking, on a real train_from_yaml run of the demo recipe."""

from __future__ import annotations

from composer.core import Algorithm, Callback, Event

from foundry_ext.testing.benchmarking import ab_report, in_run_ab
from tests.conftest import DEMO_YAML, SMALL_CORPUS


class _CountingCallback(Callback):

    def __init__(self) -> None:
        self.batch_ends: list[int] = []
        self.fit_starts = 0

    def fit_start(self, state, logger) -> None:
        self.fit_starts += 1

    def batch_end(self, state, logger) -> None:
        self.batch_ends.append(int(state.timestamp.batch))


class _CountingAlgorithm(Algorithm):

    def __init__(self) -> None:
        self.batch_starts: list[int] = []

    def match(self, event, state) -> bool:
        return event == Event.BATCH_START

    def apply(self, event, state, logger) -> None:
        self.batch_starts.append(int(state.timestamp.batch))


def test_a_callback_sees_only_the_on_blocks_and_its_setup_always():
    component = _CountingCallback()
    steps = in_run_ab(DEMO_YAML, component, pairs=2, block=2, warmup=3, overrides=[SMALL_CORPUS])
    assert [s.on for s in steps] == [True, True, False, False, False, False, True, True]
    # Batch k (1-based) ends with timestamp k; the first recorded one is batch 4.
    assert component.batch_ends == [4, 5, 10, 11] and component.fit_starts == 1
    assert all(s.inside > 0 for s in steps if s.on) and all(s.inside == 0 for s in steps if not s.on)
    assert all(s.wall > 0 and s.cpu > 0 for s in steps)
    report = ab_report(steps, block=2)
    assert report.startswith('2 on/off pairs of 2 batches') and '| wall time ratio on/off: median' in report


def test_an_algorithm_is_matched_and_applied_in_the_on_blocks():
    component = _CountingAlgorithm()
    in_run_ab(DEMO_YAML, component, pairs=1, block=1, warmup=2, overrides=[SMALL_CORPUS])
    assert component.batch_starts == [2]  # batch 3 starts at timestamp 2; batch 4 is off
