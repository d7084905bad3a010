"""The models: blocks (registry + contract) and the built-in backbones, embeddings, masking, losses, the encoder,
the pre-training model (CAVMAE), the classifier, and their weights (our format, the public layout, MAE init).

Importing the package registers every built-in backbone once; the registry in ``blocks`` imports none of them.
"""

from cavmae.models import mamba, vit  # noqa: F401  (register the "mamba" and "vit" backbones)
