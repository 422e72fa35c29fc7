"""The run lifecycle: which kind of ``fit()`` is starting, decided once from Composer's events.

Every stateful foundry-ext component must tell apart four starts, and treat them the same way:

* ``NEW``: the first ``fit()`` of a run that starts from scratch: nothing was loaded, or only weights
  (``load_weights_only``, which restores neither the timestamp nor any component's state). State starts empty.
* ``RESUMED``: the first ``fit()`` after a checkpoint load (``autoresume`` or ``load_path``) that restored the
  timestamp or the component's own checkpointed state. That state continues. With
  ``load_ignore_keys: [state/timestamp]`` the timestamp comes back as 0 although the component state was loaded:
  :attr:`FitStart.batch` is then 0, and each component says what that means for it.
* ``CONTINUED``: a later ``fit()`` on the same trainer that goes on from where the last one stopped (``duration``
  given, ``reset_time=False``). State continues.
* ``RESTARTED``: ``fit(reset_time=True)``, on a trainer that trained or loaded a checkpoint before: the timestamp
  is back at 0, a new run from these weights. State that belongs to the earlier run's timeline (histories,
  detectors, manifests, records) starts over.

Checkpoints load in ``Trainer.__init__``, before the first ``fit()``; a component's ``load_state_dict`` runs during
that load and Composer runs ``Event.AFTER_LOAD`` after it, whether or not a checkpoint was loaded. So only a first
``fit()`` can be ``RESUMED``, and the others are told apart by their timestamp.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Optional

from composer.core import State

log = logging.getLogger(__name__)

__all__ = ['FitPhase', 'FitStart', 'RunLifecycle']


class FitPhase(enum.Enum):
    """The kind of ``fit()`` that is starting (see the module docstring)."""
    NEW = 'new'
    RESUMED = 'resumed'
    CONTINUED = 'continued'
    RESTARTED = 'restarted'


@dataclass(frozen=True)
class FitStart:
    """What :meth:`RunLifecycle.fit_start` decided.

    Attributes:
        phase (FitPhase): The kind of start.
        batch (int): ``state.timestamp.batch`` at the start.
    """
    phase: FitPhase
    batch: int

    @property
    def continues(self) -> bool:
        """Whether the run's earlier state carries on (``RESUMED`` or ``CONTINUED``)."""
        return self.phase in (FitPhase.RESUMED, FitPhase.CONTINUED)

    @property
    def from_zero(self) -> bool:
        """Whether training starts at batch 0 (``NEW``, ``RESTARTED``, or a load that reset the timestamp)."""
        return self.batch == 0


class RunLifecycle:
    """Tracks one component's view of the trainer's fits.

    The component calls :meth:`restored` from its ``load_state_dict``, :meth:`after_load` at ``Event.AFTER_LOAD``
    and :meth:`fit_start` at ``Event.FIT_START``; the latter returns the :class:`FitStart` and keeps it as
    :attr:`current`.
    """

    def __init__(self) -> None:
        self._fits = 0
        self._restored = False
        self._loaded_batch = 0
        self.current: Optional[FitStart] = None

    def restored(self) -> None:
        """The component's checkpointed state was just loaded."""
        self._restored = True

    def after_load(self, state: State) -> None:
        self._loaded_batch = int(state.timestamp.batch)

    def fit_start(self, state: State) -> FitStart:
        batch = int(state.timestamp.batch)
        if self._fits == 0 and not (batch == 0 and self._loaded_batch > 0):
            phase = FitPhase.RESUMED if batch > 0 or self._restored else FitPhase.NEW
        else:  # a later fit, or fit(reset_time=True) right after a resume
            phase = FitPhase.RESTARTED if batch == 0 else FitPhase.CONTINUED
        self._fits += 1
        self.current = FitStart(phase, batch)
        log.debug('fit %d starts as %s at batch %d', self._fits, phase.value, batch)
        return self.current
