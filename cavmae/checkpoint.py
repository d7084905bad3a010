"""Moved to :mod:`cavmae.models.weights`; this alias keeps old imports working for one release."""

import warnings

from cavmae.models.weights import *  # noqa: F403

warnings.warn(
    "cavmae.checkpoint moved to cavmae.models.weights; the old name goes away in the next release",
    DeprecationWarning,
    stacklevel=2,
)
