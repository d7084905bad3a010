"""cavmae: CAV-MAE (Contrastive Audio-Visual Masked Autoencoder) pre-training, fine-tuning and retrieval.

Public API::

    import cavmae
    cfg = cavmae.load_config("configs/tiny.yaml", ["model.backbone=vit"])
    model = cavmae.create_model(cfg.model)                  # pre-training model (CAVMAE)
    clf = cavmae.create_model(cfg.model, kind="classifier")  # fine-tuning model (CAVMAEClassifier)
    model = cavmae.load_model("cav-mae-scale++.pth")         # public checkpoint or our model directory
    audio_emb, video_emb = model.embed(fbank, frames)
    cavmae.save_pretrained(model, "out/model")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# Names are imported on first use (PEP 562), so that `import cavmae.data.prepare` and the `cavmae` command stay
# free of torch: prepare's decoding processes need none of it (~700 MiB each otherwise).
_EXPORTS = {
    "CheckpointError": "cavmae.checkpoint",
    "from_pretrained": "cavmae.checkpoint",
    "load_model": "cavmae.checkpoint",
    "save_pretrained": "cavmae.checkpoint",
    "Config": "cavmae.config",
    "ConfigError": "cavmae.config",
    "DataConfig": "cavmae.config",
    "ModelConfig": "cavmae.config",
    "OptimConfig": "cavmae.config",
    "TrainConfig": "cavmae.config",
    "load_config": "cavmae.config",
    "create_block": "cavmae.models.blocks",
    "list_blocks": "cavmae.models.blocks",
    "register_block": "cavmae.models.blocks",
    "CAVMAE": "cavmae.models.cavmae",
    "CAVMAEClassifier": "cavmae.models.classifier",
}

if TYPE_CHECKING:
    from cavmae.checkpoint import CheckpointError, from_pretrained, load_model, save_pretrained
    from cavmae.config import Config, ConfigError, DataConfig, ModelConfig, OptimConfig, TrainConfig, load_config
    from cavmae.models.blocks import create_block, list_blocks, register_block
    from cavmae.models.cavmae import CAVMAE
    from cavmae.models.classifier import CAVMAEClassifier


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cavmae' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__version__ = "0.1.0"


def create_model(cfg: ModelConfig | None = None, kind: str = "pretrain"):
    """A freshly initialised model: ``kind`` is ``pretrain`` (CAVMAE) or ``classifier`` (CAVMAEClassifier)."""
    from cavmae.checkpoint import build_model
    from cavmae.config import ModelConfig

    return build_model(kind, cfg or ModelConfig())


__all__ = [
    "CAVMAE",
    "CAVMAEClassifier",
    "CheckpointError",
    "Config",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "create_block",
    "create_model",
    "from_pretrained",
    "list_blocks",
    "load_config",
    "load_model",
    "register_block",
    "save_pretrained",
]
