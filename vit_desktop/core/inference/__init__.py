"""Running a model: the engine (batched classification), attention rollout and class maps, how
faithful a map is, devices and precision.

Imports the base and the wings below (io, labels, models), never training.
"""
