"""Serving: tiled, memory-bounded upscaling with a model folder, and the consistency verdict of an
output against the LR it came from (with its heat map)."""
