"""Early final-loss prediction across model sizes on real public families (``data/lr_scheduling_families``).

For each family (sizes trained at about the same tokens per parameter, one schedule), a reference is fitted on
the smaller sizes exactly as ``foundry-ext collapse fit`` fits it (smoothing and start by default, a per-run scale,
size-aware across the runs' ``run.json`` controls), and the final loss of each larger size is predicted from its
first 10%, 20% and 30% as ``foundry-ext collapse predict --fraction F`` predicts it. The "final loss" is the mean
eval loss over the last 5% of the run (measured, model-free), and the prediction of that quantity is
``final_window_losses``. The naive baseline, measured in the same run: the target's loss at its last point before
``F`` divided by the mean ``L(F T) / L(T)`` of the reference runs (same definitions).

Two protocols:

* ``family``: fit on the three smallest sizes of a fixed-TPP family (two for OpenWebText2), predict the others;
* ``sizes``: fit on every run of the sizes up to a cut (all TPPs, and for SlimPajama cosine the 124M LR sweep),
  predict every run of the larger sizes; the naive baseline uses the reference runs within 25% of the target's TPP.

Example::

    python scripts/bench/collapse_real_family.py                 # the cosine families (tuned on)
    python scripts/bench/collapse_real_family.py --held-out      # the WSD families (not looked at while tuning)
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from foundry_ext.collapse.curves import smooth_curve
from foundry_ext.collapse.prediction import final_window_losses, predict_final_loss
from foundry_ext.collapse.runs import CollapseRun, fit_runs, load_run
from foundry_ext.core.metric_names import EVAL_CROSS_ENTROPY

log = logging.getLogger(__name__)

DATA = Path(__file__).resolve().parents[2] / 'data' / 'lr_scheduling_families'
FRACTIONS = (0.1, 0.2, 0.3)
FINAL_WINDOW = 0.05

# name: (folder, runs in size order, number of reference runs for the 'family' protocol, size cut for 'sizes')
FAMILIES = {
    'SlimPajama cosine TPP~20': ('slimpajama-cosine', ('33m-7000ba-lr0.002', '53m-11250ba-lr0.002',
                                                       '60m-12500ba-lr0.002', '93m-17500ba-lr0.002',
                                                       '124m-25000ba-lr0.001', '152m-25000ba-lr0.001',
                                                       '209m-37500ba-lr0.001', '360m-37500ba-lr0.001'), 3, 130e6),
    'SlimPajama cosine TPP~30': ('slimpajama-cosine', ('33m-10000ba-lr0.002', '60m-17500ba-lr0.002',
                                                       '93m-25000ba-lr0.002', '124m-30000ba-lr0.001',
                                                       '152m-50000ba-lr0.001', '209m-62500ba-lr0.001',
                                                       '360m-50000ba-lr0.001'), 3, 130e6),
    'SlimPajama cosine TPP~12': ('slimpajama-cosine', ('33m-3000ba-lr0.002', '53m-7500ba-lr0.002',
                                                       '60m-7500ba-lr0.002', '93m-10000ba-lr0.002',
                                                       '124m-15000ba-lr0.001', '360m-25000ba-lr0.001'), 3, 130e6),
    'OpenWebText2 cosine TPP~20': ('openwebtext2-cosine', ('60m-12500ba-lr0.002', '93m-17500ba-lr0.002',
                                                           '166m-30000ba-lr0.001'), 2, 100e6),
    'OpenWebText2 cosine TPP~12': ('openwebtext2-cosine', ('60m-7500ba-lr0.002', '93m-10000ba-lr0.002',
                                                           '166m-15000ba-lr0.001'), 2, 100e6),
}
HELD_OUT = {
    'SlimPajama WSD TPP~20': ('slimpajama-wsd', ('33m-7000ba-lr0.001', '60m-12500ba-lr0.001', '93m-17500ba-lr0.001',
                                                 '124m-25000ba-lr0.0005', '152m-37500ba-lr0.0005',
                                                 '209m-50000ba-lr0.0005', '360m-37500ba-lr0.0005'), 3, 130e6),
    'SlimPajama WSD TPP~12': ('slimpajama-wsd', ('33m-3000ba-lr0.001', '53m-7500ba-lr0.001', '60m-7500ba-lr0.001',
                                                 '93m-10000ba-lr0.001', '124m-15000ba-lr0.0005',
                                                 '152m-25000ba-lr0.0005', '209m-37500ba-lr0.0005',
                                                 '360m-25000ba-lr0.0005'), 3, 130e6),
    'OpenWebText2 WSD TPP~20': ('openwebtext2-wsd', ('60m-12500ba-lr0.001', '93m-17500ba-lr0.001',
                                                     '166m-30000ba-lr0.0005'), 2, 100e6),
    'OpenWebText2 WSD TPP~12': ('openwebtext2-wsd', ('60m-7500ba-lr0.001', '93m-10000ba-lr0.001',
                                                     '166m-15000ba-lr0.0005'), 2, 100e6),
}
# Extra reference runs for the 'sizes' protocol: the 124M LR sweep (same recipe) for SlimPajama cosine.
EXTRA = {'slimpajama-cosine': 'slimpajama-cosine-lr-sweep'}


@dataclass(frozen=True)
class Outcome:
    """One target at one fraction: the errors of the method and of the naive baseline, and the interval."""

    target: str
    fraction: float
    error: float
    naive_error: float
    covered: bool
    half_width: float  # of the interval, relative to the prediction


def load(folder: Path) -> CollapseRun:
    """A vendored run: its eval loss, logged LR and run.json controls."""
    return load_run(folder, loss_key=EVAL_CROSS_ENTROPY)


def _measured(run: CollapseRun) -> float:
    """The mean loss over the last 5% of the run (at least its last point), as ``final_window_losses`` measures."""
    t = np.asarray(run.curve.steps) / run.total_steps
    return float(np.mean(np.asarray(run.curve.losses)[t >= min(1.0 - FINAL_WINDOW, t[-1])]))


def _loss_at(run: CollapseRun, fraction: float) -> float:
    return float(np.interp(fraction * run.total_steps, run.curve.steps, run.curve.losses))


def evaluate(refs: Sequence[CollapseRun], targets: Sequence[CollapseRun],
             naive_refs: Optional[dict[str, Sequence[CollapseRun]]] = None) -> list[Outcome]:
    """Predicts every target from ``refs`` at each fraction, with the naive baseline from ``naive_refs``."""
    family = fit_runs(refs)
    outcomes = []
    for run in targets:
        ref = family.for_controls(run.controls)
        steps, losses = smooth_curve(run.curve.steps, run.curve.losses, ref.smoothing)
        measured = _measured(run)
        baseline = (naive_refs or {}).get(run.name, refs)
        for fraction in FRACTIONS:
            pred = predict_final_loss(steps, losses, run.total_steps, ref, fraction_used=fraction)
            _, predicted = final_window_losses(*run.curve, ref, pred.final_loss, FINAL_WINDOW)
            scale = predicted / pred.final_loss
            last = float(np.asarray(run.curve.steps)[np.asarray(run.curve.steps) <= fraction * run.total_steps][-1])
            at = last / run.total_steps
            ratio = np.mean([_loss_at(r, at) / _measured(r) for r in baseline])
            outcomes.append(Outcome(run.name, fraction, predicted / measured - 1,
                                    _loss_at(run, at) / ratio / measured - 1,
                                    pred.lower * scale <= measured <= pred.upper * scale,
                                    (pred.upper - pred.lower) / 2 / pred.final_loss))
    return outcomes


def protocols(families: dict, data: Path) -> dict[str, tuple[list[CollapseRun], list[CollapseRun], dict]]:
    """The reference and target runs of every family under both protocols."""
    out = {}
    for name, (folder, members, k, cut) in families.items():
        runs = [load(data / folder / m) for m in members]
        out[f'{name}, family'] = (runs[:k], runs[k:], {})
        pool = [load(p.parent) for p in sorted((data / folder).glob('*/run.json'))]
        if folder in EXTRA:
            pool += [load(p.parent) for p in sorted((data / EXTRA[folder]).glob('*/run.json'))]
        refs = [r for r in pool if r.controls.params < cut]
        targets = [r for r in pool if r.controls.params >= cut and (data / folder / r.name).is_dir()]
        naive = {t.name: [r for r in refs if abs(np.log(r.controls.tpp / t.controls.tpp)) < np.log(1.25)] or refs
                 for t in targets}
        out[f'{folder}, every run < {cut / 1e6:.0f}M -> larger'] = (refs, targets, naive)
    return out


def _pct(values: Sequence[float]) -> str:
    return f'{np.max(np.abs(values)) * 100:.2f}'


def report(results: dict[str, list[Outcome]]) -> str:
    """Markdown tables: every error, then worst |error| per split and fraction with the naive baseline."""
    lines = []
    for split, outcomes in results.items():
        lines.append(f'\n{split}\n\n| target | ' + ' | '.join(f'{f:.0%}: error (naive)' for f in FRACTIONS) + ' |')
        lines.append('|---' * (len(FRACTIONS) + 1) + '|')
        for target in dict.fromkeys(o.target for o in outcomes):
            cells = [f'{o.error:+.2%} ({o.naive_error:+.2%}){"" if o.covered else " *"}'
                     for o in outcomes if o.target == target]
            lines.append(f'| {target} | ' + ' | '.join(cells) + ' |')
    lines.append('\n(* the measured final loss lies outside the predicted interval)\n')
    lines.append('| split | targets | worst abs error % at ' + ' / '.join(f'{f:.0%}' for f in FRACTIONS) +
                 ' | naive | interval covers | median half-width % at ' + ' / '.join(f'{f:.0%}' for f in FRACTIONS) +
                 ' |\n|---|---|---|---|---|---|')
    for split, outcomes in results.items():
        by = {f: [o for o in outcomes if o.fraction == f] for f in FRACTIONS}
        cover = np.mean([o.covered for o in outcomes])
        lines.append(f'| {split} | {len(by[FRACTIONS[0]])} | ' + ' / '.join(_pct([o.error for o in by[f]])
                                                                            for f in FRACTIONS) +
                     ' | ' + ' / '.join(_pct([o.naive_error for o in by[f]]) for f in FRACTIONS) +
                     f' | {cover:.0%} | ' +
                     ' / '.join(f'{np.median([o.half_width for o in by[f]]) * 100:.2f}' for f in FRACTIONS) + ' |')
    return '\n'.join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    """The command line of the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data', type=Path, default=DATA, help=f'vendored runs (default: {DATA})')
    parser.add_argument('--held-out', action='store_true', help='the WSD families instead of the cosine ones')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    splits = protocols(HELD_OUT if args.held_out else FAMILIES, args.data)
    print(report({name: evaluate(*split) for name, split in splits.items()}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
