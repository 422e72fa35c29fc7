"""Where a callback may keep files next to the run's checkpoints."""

from __future__ import annotations

from typing import Optional

from composer.callbacks import CheckpointSaver
from composer.core import State
from composer.utils import format_name_with_dist

__all__ = ['local_save_folder']


def local_save_folder(state: State) -> Optional[str]:
    """The local folder of the run's ``save_folder``; None when the run saves nothing or saves remotely.

    Composer stages a remote ``save_folder`` (``s3://...``) in a temporary local folder that is never kept,
    so a file a callback wrote there would be lost.
    """
    for saver in state.callbacks:
        if isinstance(saver, CheckpointSaver) and saver.remote_uploader is None:
            return format_name_with_dist(saver.folder, state.run_name)
    return None
