"""``foundry-ext analyze-loss``: the ``loss_spike_monitor`` detector run offline over an exported series.

Input: a RUN (:func:`foundry_ext.core.metrics_io.resolve_run`): a JSONL or CSV metrics file (e.g. the ``jsonl``
logger's ``metrics.jsonl``), a run folder, or an MLflow run (``runs:/<run_id>`` or its name). The series of one
metric key goes through the same :class:`~foundry_ext.spikes.detector.SpikeDetector`, with the same per-stream
defaults, as the callback uses online; at the last step, events still open are closed as ``truncated``. Batch
outliers (one or two points above the threshold) are summarised apart from the spikes. Output: a text report, a
JSON report and a PNG of the series with its trend, spike threshold, the events shaded by kind and the outliers
marked.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from foundry_ext.core.errors import fail
from foundry_ext.core.jsonl import dumps
from foundry_ext.core.metric_names import LOSS_KEY
from foundry_ext.core.metrics_io import Series, resolve_run
from foundry_ext.spikes.config import DETECTOR_DEFAULTS, check_detector_kwargs, event_record, stream_detector_kwargs
from foundry_ext.spikes.detector import BATCH_OUTLIER, EVENT_KINDS, LossEvent, SpikeDetector, TrendCurve
from foundry_ext.spikes.offline import run_detector
from foundry_ext.spikes.plots import plot_loss_events

log = logging.getLogger(__name__)

__all__ = ['LossAnalysis', 'analyze_loss', 'analyze_series', 'format_report', 'parse_settings']

_WHERE = 'analyze-loss --detector'
# Outliers listed by name in the text report (all are in the JSON report).
_LISTED_OUTLIERS = 10


@dataclass
class LossAnalysis:
    """Result of running the detector over one series.

    Args:
        key (str): Metric key (the stream).
        loss (Series): Steps and losses.
        detector (dict[str, Any]): The detector's full settings.
        events (list[LossEvent]): Classified spikes and divergences, in the order they were closed.
        ends (list[int]): Last step of each event: its recovery step, or the step at which it was classified.
        outliers (list[LossEvent]): Batch outliers, in order.
        trend (Series): The detector's trend at each step after its warmup.
        threshold (Series): The loss above which a spike opens, at each step after the warmup.
        notes (list[str]): Caveats, e.g. a series too short for the warmup.
        path (Path, optional): Input file.
        source (str, optional): The run as read: the file's path, or ``runs:/<id> (<name>)`` of an MLflow run.
        png (Path, optional): Plot written.
        report (Path, optional): JSON report written.
    """

    key: str
    loss: Series
    detector: dict[str, Any]
    events: list[LossEvent]
    ends: list[int]
    outliers: list[LossEvent]
    trend: Series
    threshold: Series
    notes: list[str] = field(default_factory=list)
    path: Optional[Path] = None
    source: Optional[str] = None
    png: Optional[Path] = None
    report: Optional[Path] = None

    @property
    def outliers_per_1k(self) -> float:
        """Batch outliers per 1000 steps of the series."""
        steps = self.loss[0]
        span = int(steps[-1]) - int(steps[0]) + 1 if len(steps) else 0
        return 1000.0 * len(self.outliers) / span if span else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The JSON report."""
        steps = self.loss[0]
        return {
            'file': None if self.path is None else str(self.path),
            'source': self.source,
            'key': self.key,
            'points': int(len(steps)),
            'first_step': int(steps[0]) if len(steps) else None,
            'last_step': int(steps[-1]) if len(steps) else None,
            'detector': self.detector,
            'counts': {kind: sum(e.kind == kind for e in self.events) for kind in EVENT_KINDS},
            'events': [event_record(self.key, e, end_step=end) for e, end in zip(self.events, self.ends)],
            'outlier_count': len(self.outliers),
            'outliers_per_1k_steps': self.outliers_per_1k,
            'outliers': [{'step': e.onset_step, 'height': e.height, 'peak_loss': e.peak_loss,
                          'baseline_loss': e.baseline_loss, 'steps': e.above_steps, 'status': e.status}
                         for e in self.outliers],
            'notes': self.notes,
            'png': None if self.png is None else str(self.png),
        }


def parse_settings(items: Optional[Sequence[str]]) -> dict[str, Any]:
    """Parses ``KEY=VALUE`` detector settings from the command line (numbers), then checks them."""
    settings: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition('=')
        if not sep:
            fail(f'{_WHERE} {item!r}: expected KEY=VALUE, e.g. z_threshold=5. Settings: '
                 f'{", ".join(sorted(DETECTOR_DEFAULTS))}.')
        try:
            settings[key.strip()] = int(value)
        except ValueError:
            try:
                settings[key.strip()] = float(value)
            except ValueError:
                fail(f'{_WHERE} {item!r}: {value!r} is not a number.')
    return check_detector_kwargs(settings, _WHERE)


def analyze_series(steps: Sequence[int], losses: Sequence[float], key: str = LOSS_KEY,
                   detector: Optional[dict[str, Any]] = None) -> LossAnalysis:
    """Runs the detector for stream ``key`` over a series, recording its trend and threshold at each step.

    Args:
        steps (Sequence[int]): Increasing steps.
        losses (Sequence[float]): Loss at each step.
        key (str): Metric key; ``metrics/<eval label>/...`` keys get the sparse eval defaults, as in the callback.
        detector (dict[str, Any], optional): Checked settings (:func:`parse_settings`) over the stream's defaults.
    """
    overrides = detector or {}
    kwargs = stream_detector_kwargs(key, overrides, overrides, _WHERE)
    spike_detector = SpikeDetector(**kwargs)
    steps = np.asarray(steps, dtype=np.int64)
    losses = np.asarray(losses, dtype=np.float64)
    non_positive = int((np.isfinite(losses) & (losses <= 0)).sum())
    if len(losses) and non_positive == len(losses):
        fail(f'{key}: all {len(losses)} values are <= 0, and the detector works on the log of a loss. Pick a loss '
             f'metric (cross-entropy, perplexity) with --key.')
    curve = TrendCurve()
    closed = run_detector(spike_detector, steps, losses, curve)
    events = [(step, e) for step, e in closed if e.kind != BATCH_OUTLIER]
    notes = []
    finite = int(np.isfinite(losses).sum())
    warmup = spike_detector.config['warmup_steps']
    if finite < warmup:
        notes.append(f'Only {finite} finite points, fewer than warmup_steps={warmup}: the detector '
                     f'never left its warmup, so only non-finite losses could be reported.')
    elif len(steps) > warmup:
        notes.append(f'Detection starts after warmup_steps={warmup} points: steps {steps[0]} to {steps[warmup - 1]} '
                     f'were only checked for non-finite losses (--detector warmup_steps=N for a shorter warmup).')
    if finite < len(losses):
        notes.append(f'{len(losses) - finite} non-finite losses (NaN/inf), reported as spikes of infinite height.')
    if non_positive:
        notes.append(f'{non_positive} values <= 0 were left out (they have no log).')
    trend_steps, trend, threshold = curve.arrays()
    return LossAnalysis(key=key, loss=(steps, losses), detector=dict(spike_detector.config),
                        events=[e for _, e in events],
                        ends=[step if e.recovered_step is None else e.recovered_step for step, e in events],
                        outliers=[e for _, e in closed if e.kind == BATCH_OUTLIER], trend=(trend_steps, trend),
                        threshold=(trend_steps, threshold), notes=notes)


def analyze_loss(path: Union[str, Path], key: str = LOSS_KEY, out: Optional[Union[str, Path]] = None,
                 report: Optional[Union[str, Path]] = None, detector: Optional[dict[str, Any]] = None,
                 tracking_uri: Optional[str] = None) -> LossAnalysis:
    """Reads one metric of a run, runs the detector, and writes the PNG and the JSON report.

    Args:
        path (str | Path): The RUN: a metrics file, a run folder, or an MLflow run (``runs:/<run_id>``, its name).
        key (str): Metric to analyse.
        out (str | Path, optional): PNG path. Default: ``<file stem>.<key>.events.png`` next to the file, or
            ``<MLflow run name>.<key>.events.png`` in the working folder.
        report (str | Path, optional): JSON report path. Default: the PNG path with ``.json``.
        detector (dict[str, Any], optional): Checked detector settings (:func:`parse_settings`).
        tracking_uri (str, optional): MLflow tracking store of an MLflow run; default ``MLFLOW_TRACKING_URI``.
    """
    source = resolve_run(path, tracking_uri)
    steps, losses = source.read_one(key)
    analysis = analyze_series(steps, losses, key, detector)
    analysis.path, analysis.source = source.path, source.label
    safe_key = re.sub(r'[^A-Za-z0-9]+', '_', key).strip('_')
    default = (source.path.with_name(f'{source.path.stem}.{safe_key}.events.png') if source.path is not None else
               Path(f'{re.sub(r"[^A-Za-z0-9._-]+", "_", source.name)}.{safe_key}.events.png'))
    analysis.png = Path(out) if out is not None else default
    analysis.report = Path(report) if report is not None else analysis.png.with_suffix('.json')
    title = f'{source.path.parent.name}/{source.path.name}' if source.path is not None else source.label
    plot_loss_events(analysis.loss, analysis.events, analysis.ends, analysis.png, trend=analysis.trend,
                     threshold=analysis.threshold, title=f'{title}: {key}', ylabel=key, outliers=analysis.outliers)
    analysis.report.parent.mkdir(parents=True, exist_ok=True)
    analysis.report.write_text(dumps(analysis.to_dict(), indent=1) + '\n')
    return analysis


def format_report(analysis: LossAnalysis) -> str:
    """A plain-text summary: the series, one line per event, the notes and the files written."""
    steps = analysis.loss[0]
    span = f'steps {steps[0]}-{steps[-1]}' if len(steps) else 'empty'
    lines = [f'{analysis.source or analysis.path or "series"}: {analysis.key}, {len(steps)} points ({span})']
    counts = ', '.join(f'{n} {kind}' for kind, n in analysis.to_dict()['counts'].items() if n)
    lines.append(f'{len(analysis.events)} events' + (f': {counts}' if counts else ''))
    if analysis.events:
        lines.append(f'  {"kind":<16} {"status":<9} {"onset":>7} {"peak":>7} {"peak loss":>10} {"baseline":>9} '
                     f'{"height":>8} {"recovered":>9} {"steps":>6} {"shift":>7}')
        for e in analysis.events:
            lines.append(f'  {e.kind:<16} {e.status:<9} {e.onset_step:>7} {e.peak_step:>7} {e.peak_loss:>10.4g} '
                         f'{e.baseline_loss:>9.4g} {e.height:>+8.1%} {_or_dash(e.recovered_step):>9} '
                         f'{_or_dash(e.steps_to_recover):>6} {e.level_shift:>+7.1%}')
    if analysis.outliers:
        largest = sorted(analysis.outliers, key=lambda e: -e.height)[:_LISTED_OUTLIERS]
        lines.append(f'{len(analysis.outliers)} batch outliers ({analysis.outliers_per_1k:.2f} per 1k steps; not '
                     f'spikes: one or two points above the threshold, back under it right after); the largest:')
        lines.append('  ' + ', '.join(f'step {e.onset_step} {e.height:+.0%}' for e in largest))
    lines.extend(f'note: {note}' for note in analysis.notes)
    if analysis.report is not None:
        lines.append(f'report: {analysis.report}')
    if analysis.png is not None:
        lines.append(f'plot: {analysis.png}')
    return '\n'.join(lines)


def _or_dash(value: Optional[int]) -> str:
    return '-' if value is None else str(value)
