"""Real loss curves for ``loss_spike_monitor``: the demo model trained once normally, once with provoked faults.

Both runs train ``yamls/wsd.yaml`` (tiny MPT, CPU) with ``loss_spike_monitor`` watching the train loss and the
eval cross-entropy; the provoked run adds LR jumps (:class:`~foundry_ext.testing.lr_jump.LRJump`: a few batches at
a multiple of the scheduled LR, which make real spikes) and batches of random tokens
(:class:`~foundry_ext.testing.garbage_batch.GarbageBatch`: batch outliers). Then ``analyze-loss`` runs over each
run's ``metrics.jsonl``, next to the online events (``loss_events.jsonl`` in the save folder).

Run from the repository root; it writes ``docs/spike_real_provoked.png`` (and ``docs/spike_real_clean.png``
unless ``--no-clean``) and prints what the detector found online and offline. The run in ``docs/loss_spikes.md``::

    python scripts/experiments/spike_demo.py --no-clean --max-duration 400 --jump 150:2:5 --jump 220:3:20 \
        --jump 320:4:60 --garbage 100 scheduler.t_decay=100ba
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence, Union

from foundry_ext.callbacks.loss_spike_monitor import EVENTS_FILENAME
from foundry_ext.commands.analyze_loss import LossAnalysis, analyze_loss, format_report
from foundry_ext.core.metric_names import LOSS_KEY
from foundry_ext.data.tokenizer import BYTE_VOCAB_SIZE
from foundry_ext.spikes.detector import STATUS_OPEN
from foundry_ext.testing.garbage_batch import GarbageBatch
from foundry_ext.testing.lr_jump import LRJump

log = logging.getLogger(__name__)

__all__ = ['format_demo', 'main', 'run_spike_demo']

EVAL_KEY = 'metrics/eval/LanguageCrossEntropy'


def run_spike_demo(yaml_path: Union[str, Path], out_dir: Union[str, Path] = 'runs/spike-demo',
                   docs_dir: Union[str, Path] = 'docs', max_duration: int = 600,
                   jumps: Sequence[tuple[int, int, float]] = ((300, 3, 10.0),), garbage: Sequence[int] = (),
                   overrides: Sequence[str] = (), clean_run: bool = True) -> dict[str, dict[str, Any]]:
    """Trains the clean and the provoked run, analyses both, and writes ``docs/spike_real_{clean,provoked}.png``.

    The provoked run is the clean run resumed from its checkpoint at the first fault, with the faults added: its
    first batches would be the clean run's anyway. Its ``metrics.jsonl`` starts with the clean run's lines up to
    the checkpoint, and its ``loss_spike_monitor`` continues from the checkpointed state.

    Args:
        yaml_path (str | Path): The demo recipe, ``yamls/wsd.yaml``.
        out_dir (str | Path): Runs go to ``<out_dir>/clean`` and ``<out_dir>/provoked``.
        docs_dir (str | Path): Where the two pictures go.
        max_duration (int): Batches per run.
        jumps (Sequence[tuple[int, int, float]]): LR jumps of the provoked run: (first batch, batches, factor).
        garbage (Sequence[int]): Batches of the provoked run replaced by random tokens.
        overrides (Sequence[str]): More Foundry-style overrides for both runs.
        clean_run (bool): Train the clean run too; without it, the provoked run trains from batch 0.

    Returns:
        dict[str, dict[str, Any]]: Per run: the offline analyses per stream and the online notifications.
    """
    from llmfoundry.registry import callbacks

    faults = [f'callbacks.lr_jump_{i}={{start: {s}, steps: {n}, factor: {f}}}' for i, (s, n, f) in enumerate(jumps)]
    faults += [f'callbacks.garbage_batch_{i}={{step: {s}, vocab_size: {BYTE_VOCAB_SIZE}, seed: {i}}}'
               for i, s in enumerate(garbage)]
    for name, factory in [*((f'lr_jump_{i}', LRJump) for i in range(len(jumps))),
                          *((f'garbage_batch_{i}', GarbageBatch) for i in range(len(garbage)))]:
        if name not in callbacks.get_all():
            callbacks.register(name, func=factory)
    first = min([s for s, _, _ in jumps] + list(garbage))
    clean, provoked = Path(out_dir) / 'clean', Path(out_dir) / 'provoked'
    common = [f'max_duration={max_duration}ba', 'eval_interval=25ba', 'eval_subset_num_batches=2',
              f'save_interval={first}ba', 'save_overwrite=true', 'console_log_interval=100ba',
              'callbacks.loss_spike_monitor.actions.spike=log', *overrides]
    if not clean_run:
        _train(yaml_path, provoked, [*common, *faults])
    else:
        _train(yaml_path, clean, common)
        with (clean / 'metrics.jsonl').open() as src:
            head = [line for line in src if line.strip() and json.loads(line)['step'] <= first]
        _train(yaml_path, provoked, [*common, f'load_path={clean}/checkpoints/ep0-ba{first}-rank0.pt', *faults],
               metrics_head=head)
    results = {}
    for name, run_dir in (('clean', clean), ('provoked', provoked))[0 if clean_run else 1:]:
        metrics = run_dir / 'metrics.jsonl'
        analyses: dict[str, LossAnalysis] = {
            LOSS_KEY: analyze_loss(metrics, LOSS_KEY, out=Path(docs_dir) / f'spike_real_{name}.png',
                                   report=run_dir / 'loss_events_offline.json'),
            EVAL_KEY: analyze_loss(metrics, EVAL_KEY, report=run_dir / 'eval_events_offline.json'),
        }
        online = run_dir / 'checkpoints' / EVENTS_FILENAME
        results[name] = {
            'analyses': analyses,
            'online': [json.loads(line) for line in online.read_text().splitlines() if line.strip()],
        }
    return results


def _train(yaml_path: Union[str, Path], run_dir: Path, args: Sequence[str], metrics_head: Sequence[str] = ()) -> None:
    """One ``train_from_yaml`` run into ``run_dir``, starting its metrics file with ``metrics_head``."""
    from llmfoundry.command_utils import train_from_yaml

    # A rerun starts afresh: the metrics and events files are appended to.
    (run_dir / 'checkpoints').mkdir(parents=True, exist_ok=True)
    (run_dir / 'checkpoints' / EVENTS_FILENAME).unlink(missing_ok=True)
    (run_dir / 'metrics.jsonl').write_text(''.join(metrics_head))
    log.info('spike demo: training into %s', run_dir)
    train_from_yaml(str(yaml_path), [f'variables.run_name=spike-demo-{run_dir.name}', f'variables.run_dir={run_dir}',
                                     *args]).close()


def format_demo(results: dict[str, dict[str, Any]]) -> str:
    """A text summary: per run and stream the offline report, then the online notifications."""
    lines = []
    for name, result in results.items():
        lines.append(f'=== {name} run ===')
        for analysis in result['analyses'].values():
            lines.extend([format_report(analysis), ''])
        resolved = [e for e in result['online'] if e['status'] != STATUS_OPEN]
        lines.append(f'online (loss_spike_monitor): {len(result["online"])} notifications, {len(resolved)} '
                     f'classified: ' + ('; '.join(f'{e["stream"]} {e["kind"]} onset {e["onset_step"]}'
                                                  for e in resolved) or 'none'))
        still_open = [e for e in result['online'] if e['status'] == STATUS_OPEN and not any(
            r['stream'] == e['stream'] and r['onset_step'] == e['onset_step'] for r in resolved)]
        lines.extend(f'  still open at the end: {e["stream"]} {e["kind"]} onset {e["onset_step"]}'
                     for e in still_open)
        lines.append('')
    return '\n'.join(lines)

REPO = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out-dir', default=str(REPO / 'runs' / 'spike-demo'), help='where the two runs go')
    parser.add_argument('--docs-dir', default=str(REPO / 'docs'), help='where the two PNGs go')
    parser.add_argument('--max-duration', type=int, default=600, help='batches per run (default: 600)')
    parser.add_argument('--jump', action='append', default=None, metavar='START:STEPS:FACTOR',
                        help='an LR jump of the provoked run, repeatable (default: 300:3:10)')
    parser.add_argument('--garbage', type=int, action='append', default=[], metavar='STEP',
                        help='a batch of random tokens in the provoked run, repeatable')
    parser.add_argument('--no-clean', action='store_true', help='train only the provoked run, from batch 0')
    parser.add_argument('overrides', nargs='*', help='Foundry-style overrides for the runs, e.g. scheduler.t_decay=100ba')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    jumps = [(int(s), int(n), float(f)) for s, n, f in (j.split(':') for j in args.jump or ['300:3:10'])]
    results = run_spike_demo(REPO / 'yamls' / 'wsd.yaml', args.out_dir, args.docs_dir, args.max_duration, jumps,
                             args.garbage, args.overrides, clean_run=not args.no_clean)
    print(format_demo(results))
    return 0


if __name__ == '__main__':
    sys.exit(main())
