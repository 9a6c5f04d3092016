"""Training jobs: the training entry point over the catalog, retraining decisions, the learned LR sets."""
