"""Selective-scan kernels (imported as ``cavmae.kernels``)."""
