"""vit-desktop: classify photos locally with Vision Transformers, see why, teach new classes."""

__version__ = "0.1.0"
