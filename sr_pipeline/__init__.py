"""sr_pipeline: learn how a plant's cameras degrade images and restore them with a single-step upsampler.

The public Python API (the rest of the package is the Dagster code location and its internals)::

    from sr_pipeline import load_restorer, load_profile, TileSettings

:func:`load_restorer` loads a model folder; its :meth:`~sr_pipeline.api.Restorer.upscale` restores an
array and :meth:`~sr_pipeline.api.Restorer.upscale_file` a file, with the command line's tiling, memory
plan and consistency verdict. Names are imported on first use, so ``import sr_pipeline`` stays light.
"""

__all__ = ["Restored", "Restorer", "TileSettings", "load_profile", "load_restorer"]


def __getattr__(name: str):
    if name in __all__:
        from sr_pipeline import api

        return getattr(api, name)
    raise AttributeError(f"module 'sr_pipeline' has no attribute {name!r}")
