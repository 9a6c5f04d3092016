"""The ML core: the networks, their data, training, serving and judging. No Dagster, no data root.

Six rooms, each importing only the rooms before it (sr_pipeline_tests/test_architecture.py holds them to it):

- ``images``: pixels and image files (decoding uploads, tensor conversions and the fixed resamplers, the
  streamed PNG writer, JPEG header settings, figure PNGs); imports no other room.
- ``models``: the networks (upsampler, learnable downsampler G with its differentiable JPEG, discriminators),
  the diffusion schedule, model folders and devices.
- ``data``: what training and evaluation read (synthetic degradation, training samples, registered pairs,
  learned-degradation LR sets).
- ``judge``: metrics, the scoring pass, LPIPS offline, the blur estimate and the one wording rule.
- ``train``: profiles, the training loop, its stages, losses and G's fits.
- ``serve``: tiled upscaling and the consistency verdict of an output against its input.

``train`` and ``serve`` are siblings: neither imports the other. Outside the project the core imports only
:mod:`sr_pipeline.common`.
"""
