"""What the classes mean: ImageNet-1k's class names, the WordNet hierarchy over them, and the
user's own categories by name (which base classes "dog" or "food" covers).

Imports only core's base and :mod:`vit_desktop.core.io`.
"""
