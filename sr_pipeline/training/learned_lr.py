"""Make, store and catalogue the learned-degradation LR sets (K variants of G per HR reference).

The images go into the content-addressed image store like any upload; their catalog is
``catalog/lr_sets/<downsampler version>.parquet`` (one row per variant: its image id, the HR
image it came from, the noise seed and the downsampler version). Written once, atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa

from sr_pipeline.storage import store
from sr_pipeline.storage.checked_parquet import write_checked
from sr_pipeline.storage.layout import DataLayout
from sr_pipeline.common.cameras import CameraRole


@dataclass
class LRSetResult:
    catalog_path: Path
    summary: dict
    preview_png: bytes
    rows: int


def lr_set_catalog_path(layout: DataLayout, version: str) -> Path:
    return layout.catalog / "lr_sets" / f"{version}.parquet"


def make_lr_sets(layout: DataLayout, downsampler_dir: Path, k: int = 4, seed: int = 0,
                 max_field_images: int = 200) -> LRSetResult:
    """Generate, store and catalogue K variants per HR reference; figures against the field pool."""
    from PIL import Image

    from sr_pipeline.sr.models.checkpoints import read_info
    from sr_pipeline.sr.models.downsampler import LearnedDownsampler
    from sr_pipeline.sr.data.lr_sets import build_lr_sets, preview_grid

    info = read_info(downsampler_dir)
    version = info.get("version", Path(downsampler_dir).name)
    camera = info.get("camera")  # the field camera G models: its images are the realism reference
    hr_rows = store.list_images(layout, role=CameraRole.hr_reference)
    field_rows = store.list_images(layout, role=CameraRole.field_lr,
                                   cameras=[camera] if camera else None).head(max_field_images)
    if hr_rows.empty or field_rows.empty:
        raise ValueError("learned LR sets need HR references and field LR images in the catalog")
    hr = [store.load_image(p) for p in hr_rows["path"]]
    field = [store.load_image(p) for p in field_rows["path"]]
    model = LearnedDownsampler.from_pretrained(downsampler_dir).eval()
    sets = build_lr_sets(model, hr, field, k=k, seed=seed)
    rows = []
    for hr_id, variants, seeds in zip(hr_rows["image_id"], sets.variants, sets.seeds):
        for variant, s in zip(variants, seeds):
            image_id, path, _ = store.put_image(layout, Image.fromarray(variant))
            rows.append({"image_id": image_id, "source_image_id": hr_id, "seed": s,
                         "downsampler_version": version, "camera": camera or "", "width": variant.shape[1], "height": variant.shape[0],
                         "stored_path": store.relative_to_root(layout, path)})
    path = lr_set_catalog_path(layout, version)
    if not path.exists():  # written once per downsampler version; a re-run finds the same images
        table = pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False)
        store.atomic_write(path, lambda fh: write_checked(table, fh))  # verifies itself on read
    preview = preview_grid(hr, sets.bicubic, sets.variants, int(model.config.scale))
    return LRSetResult(path, {"downsampler_version": version, "camera": camera, **sets.summary()}, preview, len(rows))
