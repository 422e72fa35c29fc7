"""Train with LLM-Foundry, then print where the checkpoints, metrics and LR/loss plot went.

    composer scripts/train.py yamls/wsd.yaml [key=value overrides ...]

Bad input (a wrong YAML value, a missing ``load_path``, a ``save_folder`` that cannot be written) is one line,
``error: ...``, from global rank 0, and exit code 2 on every rank; a bug keeps its traceback. Relaunching a run
that is already finished prints one line and exits 0 (``checkpoint_guard``). A ``loss_spike_monitor`` rollback
exits 75 on every rank: relaunch the same command, which applies it (exit codes: ``foundry_ext/core/exits.py``).
"""

import sys
from typing import Optional, Sequence

from foundry_ext.cli.errors import one_line_errors_on_every_rank
from foundry_ext.commands.train import train
from foundry_ext.core.errors import fail


def main(argv: Optional[Sequence[str]] = None):
    """Runs :func:`foundry_ext.commands.train.train` on ``argv`` (default ``sys.argv[1:]``): a YAML and overrides."""
    argv = list(sys.argv[1:] if argv is None else argv)
    with one_line_errors_on_every_rank():
        if not argv or '=' in argv[0]:
            fail('usage: composer scripts/train.py <training YAML> [key=value ...]')
        return train(argv[0], argv[1:])


if __name__ == '__main__':
    main()
