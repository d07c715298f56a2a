"""Photos in, results out: decoding, scanning folders, result files, class folders, heatmap PNGs.

Imports only core's base (types, errors, files, paths); the layers rule in pyproject.toml keeps it so.
"""
