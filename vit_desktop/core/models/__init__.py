"""Loading a model: the ViT module, checkpoint layouts and the configs beside them, the project's own
model file, preprocessing, the registry of torchvision's weights and their download, ONNX export.

Imports the base and the wings below (io, labels), never inference or training.
"""
