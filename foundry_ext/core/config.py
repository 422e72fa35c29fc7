"""Loading a Foundry training YAML with command-line overrides, exactly as ``train_from_yaml`` does."""

from __future__ import annotations

import logging
from typing import Any, Optional, Sequence

from omegaconf import DictConfig
from omegaconf import OmegaConf as om

from foundry_ext.core.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ['load_train_config']


def load_train_config(yaml_path: str, overrides: Optional[Sequence[str]] = None,
                      warn_new_keys: bool = True) -> dict[str, Any]:
    """Loads ``yaml_path``, merges ``key=value`` overrides (Foundry's syntax) and resolves interpolations.

    With ``warn_new_keys``, an override that adds a top-level key the YAML lacks is logged as a likely typo (pass
    False where Foundry checks the keys itself, as before training).
    """
    with open(yaml_path) as f:
        cfg = om.load(f)
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f'{yaml_path} must hold a mapping at the top level.')
    for override in overrides or ():
        if '=' not in override:  # OmegaConf would read '0.2' as the nested key {'0': {'2': None}}
            raise ConfigError(f'{override!r} is not an override: write key=value, e.g. max_duration=1000ba.')
        key = override.split('=', 1)[0].lstrip('+~').split('.', 1)[0]
        if warn_new_keys and key not in cfg:
            log.warning(f'The override {override!r} adds the top-level key {key!r}, which {yaml_path} does not '
                        f'have; check its spelling.')
    if overrides:
        cfg = om.merge(cfg, om.from_cli(list(overrides)))
    return om.to_container(cfg, resolve=True)  # type: ignore[return-value]
