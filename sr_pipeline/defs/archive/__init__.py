"""The upscaled archive: one asset, check and job per field camera of the registry."""
