"""Pixels and image files: decoding uploads safely, tensor conversions and the two fixed resamplers,
the streamed PNG writer with its provenance, JPEG header settings and figure PNGs. The core's leaf room."""
