"""cavmae: CAV-MAE (Contrastive Audio-Visual Masked Autoencoder) pre-training, fine-tuning and retrieval.

Public API::

    import cavmae
    cfg = cavmae.load_config("configs/tiny.yaml", ["model.backbone=vit"])
    model = cavmae.create_model(cfg.model)                  # pre-training model (CAVMAE)
    clf = cavmae.create_model(cfg.model, kind="classifier")  # fine-tuning model (CAVMAEClassifier)
    model = cavmae.load_model("cav-mae-scale++.pth")         # public checkpoint or our model directory
    audio_emb, video_emb = model.embed(fbank, frames)
    cavmae.save_pretrained(model, "out/model")

The package is layered; each folder imports only from the ones above it in this list::

    cavmae.kernels   the selective scan (reference, PyTorch path, Triton kernels); knows nothing of cavmae
    cavmae.config    the one config tree (tree: the dataclasses; loading: YAML, overrides, checks)
    cavmae.models    blocks + registry, vit, mamba, embed, masking, losses, encoder, CAVMAE, classifier, weights
    cavmae.data      fbank, media, sources, labels, encode, prepare, engines, shards, verify, samples, loader,
                     sampler, clips (synthetic videos), random_batches
    cavmae.eval      metrics, evaluate, classify, retrieval, embed, index, search, gallery, probe, inputs
                     (models + data)
    cavmae.train     loop, batches, setup, tasks, finetune, optim, state, logs  (models + data + eval)
    cavmae.demo      the demo: pipeline, settings, held-out results, summary, figures, report
    cavmae.cli, cavmae.commands   one thin module per subcommand

``models`` and ``data`` never import each other. Names are imported lazily, so ``import cavmae`` (and
``cavmae --help``) does not load torch.

``cavmae.kernels`` lives in the repository's top-level ``kernels/`` folder: an install (wheel or editable) puts it at
``cavmae/kernels`` through the build's package mapping; in a plain checkout on ``PYTHONPATH`` (no install, as
scripts/gpu_check.sh runs) :class:`_CheckoutKernels` below maps the name to that folder.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import os
import sys
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

# public name -> module that defines it
_EXPORTS = {
    "CheckpointError": "cavmae.models.weights",
    "from_pretrained": "cavmae.models.weights",
    "load_model": "cavmae.models.weights",
    "save_pretrained": "cavmae.models.weights",
    "Config": "cavmae.config",
    "ConfigError": "cavmae.config",
    "DataConfig": "cavmae.config",
    "FinetuneConfig": "cavmae.config",
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
    from cavmae.config import (
        Config,
        ConfigError,
        DataConfig,
        FinetuneConfig,
        ModelConfig,
        OptimConfig,
        TrainConfig,
        load_config,
    )
    from cavmae.models.blocks import create_block, list_blocks, register_block
    from cavmae.models.cavmae import CAVMAE
    from cavmae.models.classifier import CAVMAEClassifier
    from cavmae.models.weights import CheckpointError, from_pretrained, load_model, save_pretrained


class _CheckoutKernels(importlib.abc.MetaPathFinder):
    """Finds ``cavmae.kernels`` in the checkout's ``kernels/`` folder (its submodules then follow its ``__path__``)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "cavmae.kernels":
            return None
        init = os.path.join(self.folder, "__init__.py")
        return importlib.util.spec_from_file_location(fullname, init, submodule_search_locations=[self.folder])


def _map_checkout_kernels() -> None:
    """In a plain checkout (this package has no ``kernels`` folder, the repository has one), import ``cavmae.kernels``
    from ``<repo>/kernels``. First on the meta path, so that no other install of cavmae answers for this checkout."""
    package = os.path.dirname(os.path.abspath(__file__))
    checkout_kernels = os.path.join(os.path.dirname(package), "kernels")
    installed = os.path.isdir(os.path.join(package, "kernels"))
    in_checkout = os.path.isfile(os.path.join(checkout_kernels, "__init__.py"))
    if not installed and in_checkout and not any(isinstance(f, _CheckoutKernels) for f in sys.meta_path):
        sys.meta_path.insert(0, _CheckoutKernels(checkout_kernels))


_map_checkout_kernels()


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cavmae' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


def create_model(cfg: ModelConfig | None = None, kind: str = "pretrain"):
    """A freshly initialised model: ``kind`` is ``pretrain`` (CAVMAE) or ``classifier`` (CAVMAEClassifier)."""
    from cavmae.config import ModelConfig
    from cavmae.models.weights import build_model

    return build_model(kind, cfg or ModelConfig())


__all__ = [
    "CAVMAE",
    "CAVMAEClassifier",
    "CheckpointError",
    "Config",
    "ConfigError",
    "DataConfig",
    "FinetuneConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "__version__",
    "create_block",
    "create_model",
    "from_pretrained",
    "list_blocks",
    "load_config",
    "load_model",
    "register_block",
    "save_pretrained",
]
