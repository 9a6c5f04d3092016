"""Evaluation on the plant's calibration pairs: the orchestration (calibration), the gate policy
(gate), promotion (promotion), output files (files) and the evaluate/promote commands (commands)."""
