"""Everything that computes. Imports torch, torchvision, Pillow, safetensors and numpy; never Qt."""
