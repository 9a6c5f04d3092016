"""Intake: the camera registry, camera uploads, decoding and ingestion into the store, the demo uploads."""
