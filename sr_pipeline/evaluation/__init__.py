"""Evaluation on the plant's calibration pairs: scoring, the report, the promotion gate."""
