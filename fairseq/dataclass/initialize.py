"""Registering every config with Hydra and composing the run's config: fairseq's import path.

The code lives in :mod:`fairseq.dataclass.compose` (the ConfigStore, composition, plugin
directories), :mod:`fairseq.dataclass.list_fields` (numbers for list fields) and
:mod:`fairseq.dataclass.hydra_hooks` (the only use of Hydra's internals). This module adds
:func:`compose_config` with ``check=True``, which checks overrides as ``fairseq-hydra-train``
does (:mod:`fairseq.dataclass.overrides`) before composing.
"""
from typing import Optional, Sequence

from omegaconf import DictConfig

from fairseq.dataclass import compose as _compose
from fairseq.dataclass.compose import (  # noqa: F401
    config_dir, hydra_init, import_user_module, primary_config_name, user_dir_in_config, yaml_choices,
)
from fairseq.dataclass.hydra_hooks import install_hydra_hooks  # noqa: F401
from fairseq.dataclass.list_fields import wrap_scalars_for_lists  # noqa: F401
from fairseq.registry import import_builtin_components as import_components  # noqa: F401


def compose_config(overrides: Sequence[str] = (), config_name: str = "config",
                   config_path: Optional[str] = None, user_config_dir: Optional[str] = None,
                   check: bool = False) -> DictConfig:
    """Compose the run config as the Hydra door does, outside any Hydra app: the arguments of
    :func:`fairseq.dataclass.compose.compose_config`, and

    Args:
        check: first check the overrides as ``fairseq-hydra-train`` does
            (:func:`fairseq.dataclass.overrides.check_overrides`): one-line errors naming the
            closest real key or the expected type, legacy string sequences such as
            ``optimizer.adam_betas='(0.9, 0.98)'`` accepted, values checked against their
            bounds. Required values (``task.data``) may still be left unset.

    Raises:
        fairseq.errors.ConfigError: with ``check``, a bad override or value.
    """
    overrides = list(overrides)
    if check:
        from fairseq.dataclass.overrides import check_overrides

        if config_path is not None:
            raise ValueError("compose_config(check=True) checks against the built-in tree (and "
                             "user_config_dir); it cannot with config_path")
        _compose.hydra_init()
        overrides = check_overrides(overrides, config_name=config_name, user_config_dir=user_config_dir,
                                    check_required=False)
    return _compose.compose_config(overrides, config_name=config_name, config_path=config_path,
                                   user_config_dir=user_config_dir)
