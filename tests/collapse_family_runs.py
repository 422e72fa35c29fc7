"""Tiny real collapse-family runs shared by the collapse callback and CLI tests (trained once per session)."""

from __future__ import annotations

import functools
from pathlib import Path

from foundry_ext.collapse.runs import CollapseRun
from scripts.experiments.collapse_family import FamilySpec, ModelSize, fit_family_reference
from tests.conftest import SMALL_CORPUS

# d_model 32, 2 layers: 39.8k parameters, 78 steps of 16 x 128 tokens at TPP 4; warmup 8 steps. Runs this short
# need a long timescale: at tau = 0.2 the weight decay (1/(0.2 * 78) per step) undoes learning and the loss rises.
SPEC = FamilySpec(
    sizes=(ModelSize(32, 2, 2), ModelSize(48, 2, 2)),
    tpp=4.0,
    tau=2.0,
    seeds=(17, 18),
    bad_size=0,
    smoothing=5,
    interval=5,
    consecutive=3,
    overrides=(SMALL_CORPUS, 'console_log_interval=1000ba', 'python_log_level=null'),
)
SIZE = SPEC.sizes[0]


@functools.lru_cache(maxsize=None)
def reference_family(base: Path) -> tuple[tuple[CollapseRun, ...], Path]:
    """Trains ``SIZE`` with each seed of ``SPEC`` into ``base`` and fits ``base/ref.json`` on them."""
    from scripts.experiments.collapse_family import train_member

    runs = tuple(train_member(SPEC, SIZE, seed, base / f'ref-s{seed}')[0] for seed in SPEC.seeds)
    ref = fit_family_reference(SPEC, runs)
    path = base / 'ref.json'
    path.write_text(ref.to_json())
    return runs, path
