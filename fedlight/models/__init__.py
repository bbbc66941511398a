"""Classifiers and the LightningModule that trains them."""

from fedlight.models.zoo import MODELS, build_model

__all__ = ["MODELS", "build_model"]
