"""The one config object: a tree of dataclasses whose defaults are the reference model and recipe.

Load order: defaults <- YAML file(s) <- dotted command-line overrides (``model.backbone=vit``). Unknown keys and
values of the wrong type raise :class:`ConfigError` naming the key and the nearest valid ones. The resolved config
is written beside every run (``config.yaml``) and inside every checkpoint. Importing it loads no torch.

- ``tree``: the dataclasses (``Config`` and its sections ``model``, ``data``, ``optim``, ``train``, ``eval``, and
  ``finetune``, present only in fine-tuning configs)
- ``loading``: YAML recipes with ``base:``, the shipped recipes (``recipe_path``), dotted overrides, type coercion,
  cross-field validation
"""

from cavmae.config.loading import (
    ConfigError,
    apply_overrides,
    check_task,
    from_dict,
    load_config,
    merge,
    recipe_path,
    validate,
)
from cavmae.config.tree import (
    Config,
    DataConfig,
    EvalConfig,
    FinetuneConfig,
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
    "FinetuneConfig",
    "MambaConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "apply_overrides",
    "check_task",
    "from_dict",
    "load_config",
    "merge",
    "recipe_path",
    "to_dict",
    "validate",
]
