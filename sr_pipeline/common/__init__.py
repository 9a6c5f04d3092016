"""Leaf helpers every layer may import, and which import nothing of the project: atomic writes, the
usage error, the validated environment settings, the camera registry and the plant's clock."""
