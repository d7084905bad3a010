"""The one config object: a tree of dataclasses whose defaults are the reference model and recipe.

Load order: defaults <- YAML file(s) <- dotted command-line overrides (``model.backbone=vit``). Unknown keys and
values of the wrong type raise :class:`ConfigError` naming the key and listing the valid ones. The resolved config
is written beside every run (``config.yaml``) and inside every checkpoint.

- ``tree``: the dataclasses (``Config`` and its sections ``model``, ``data``, ``optim``, ``train``, ``eval``)
- ``loading``: YAML recipes with ``base:``, dotted overrides, type coercion, cross-field validation
"""

from cavmae.config.loading import (
    ConfigError,
    apply_overrides,
    from_dict,
    load_config,
    merge,
    validate,
)
from cavmae.config.tree import (
    Config,
    DataConfig,
    EvalConfig,
    MambaConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    to_dict,
)

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "MambaConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "apply_overrides",
    "from_dict",
    "load_config",
    "merge",
    "to_dict",
    "validate",
]
