"""Loss-curve collapse on a small MPT family: fit a reference on the smaller sizes, predict the largest run's
final loss from its first 20%, and flag a run with a wrong AdamW timescale (docs/collapse.md, "Experiment").

    python scripts/collapse_family.py            # 3 sizes on CPU (about 8 minutes on 2 cores)
    python scripts/collapse_family.py --gpu      # 4-layer sizes d48..d128, 3 seeds, bf16 on one GPU
    python scripts/collapse_family.py --reuse    # re-analyse finished runs instead of retraining them
    python scripts/collapse_family.py --shapes-only --sizes 64,2,4 96,2,6 --tpp 5 --lr 3e-2 --seeds 17
                                                 # do these settings collapse? L(0.2T)/L(T) per run, no reference
"""

import argparse
import dataclasses
import logging
from pathlib import Path

from foundry_ext.analysis.collapse_experiment import (
    CPU_SPEC,
    GPU_SPEC,
    ModelSize,
    format_summary,
    run_experiment,
    shape_check,
)


def _size(text: str) -> ModelSize:
    try:
        d_model, n_layers, n_heads = (int(v) for v in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(f'--sizes {text!r}: give each size as d_model,n_layers,n_heads, e.g. 64,2,4')
    return ModelSize(d_model, n_layers, n_heads)


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--gpu', action='store_true', help='larger sizes and 3 seeds, for one GPU')
    parser.add_argument('--out-dir', type=Path, default=Path('runs/collapse_family'), help='run folders, ref.json')
    parser.add_argument('--docs-dir', type=Path, default=Path('docs'), help='where the two PNGs go')
    parser.add_argument('--reuse', action='store_true', help='read finished runs with identical configs')
    parser.add_argument('--shapes-only', action='store_true',
                        help='train every size and seed, and print each run\'s L(0.2T)/L(T) and L(T)')
    parser.add_argument('--sizes', type=_size, nargs='+', help='d_model,n_layers,n_heads per size, ascending')
    parser.add_argument('--tpp', type=float, help='tokens per parameter')
    parser.add_argument('--tau', type=float, help='AdamW timescale as a fraction of the run')
    parser.add_argument('--lr', type=float, help='peak LR of every size')
    parser.add_argument('--batch', type=int, help='global batch size in sequences')
    parser.add_argument('--seeds', type=int, nargs='+', help='seeds of the reference sizes')
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s: %(message)s')
    changes = {key: value for key, value in (('sizes', args.sizes and tuple(args.sizes)), ('tpp', args.tpp),
                                             ('tau', args.tau), ('lr', args.lr), ('global_batch', args.batch),
                                             ('seeds', args.seeds and tuple(args.seeds))) if value is not None}
    if args.shapes_only:
        changes['bad_size'] = 0  # no bad run: any two sizes will do
    spec = dataclasses.replace(GPU_SPEC if args.gpu else CPU_SPEC, **changes)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.shapes_only:
        print(shape_check(spec, args.out_dir.resolve(), args.reuse))
    else:
        print(format_summary(run_experiment(spec, args.out_dir.resolve(), args.docs_dir, args.reuse)))
