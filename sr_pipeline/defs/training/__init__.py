"""Training: the teacher, each field camera's co-trained student and downsampler and its learned LR sets (launched as processes through Dagster Pipes), their resources, and the retraining sensor."""
