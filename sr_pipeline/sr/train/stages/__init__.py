"""Training stages: what one step of a kind of training does, run by :mod:`sr_pipeline.sr.train.loop`."""
