"""Serving: upscaling for people and scripts, and the upscaled archive."""
