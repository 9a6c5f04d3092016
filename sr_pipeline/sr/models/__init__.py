"""The networks and their folders: the diffusion upsampler, the learnable downsampler G (with its
differentiable JPEG), the discriminators, the residual-shifting schedule, model folders on disk and devices.
Imports only :mod:`sr_pipeline.sr.images`."""
