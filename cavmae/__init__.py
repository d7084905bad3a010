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

from cavmae.checkpoint import CheckpointError, from_pretrained, load_model, save_pretrained
from cavmae.config import Config, ConfigError, DataConfig, ModelConfig, OptimConfig, TrainConfig, load_config
from cavmae.models.blocks import create_block, list_blocks, register_block
from cavmae.models.cavmae import CAVMAE
from cavmae.models.classifier import CAVMAEClassifier

__version__ = "0.1.0"


def create_model(cfg: ModelConfig | None = None, kind: str = "pretrain"):
    """A freshly initialised model: ``kind`` is ``pretrain`` (CAVMAE) or ``classifier`` (CAVMAEClassifier)."""
    from cavmae.checkpoint import build_model

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
