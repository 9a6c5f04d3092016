"""Exactly-once accounting: concurrent ingestions of the same images accept each image once."""

from __future__ import annotations

import threading

import numpy as np
from conftest import encode

from sr_pipeline.intake.ingest import ingest_batch
from sr_pipeline.storage import store

N_IMAGES = 300
ROUNDS = 20


def _tiny_pngs(n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [encode(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(n)]


def _race(layout, registry, batches: list[str]) -> list:
    """Run one ingest_batch per batch key in its own thread, all released at once."""
    barrier = threading.Barrier(len(batches))
    results: dict[str, object] = {}

    def run(batch: str) -> None:
        barrier.wait()
        try:
            results[batch] = ingest_batch(layout, registry, batch, workers=1, durable=False)
        except BaseException as exc:  # reported by the assertion below
            results[batch] = exc

    threads = [threading.Thread(target=run, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [results[b] for b in batches]


def test_two_concurrent_ingestions_of_the_same_images_accept_each_once(tmp_path, registry):
    from sr_pipeline.storage.layout import DataLayout

    images = _tiny_pngs(N_IMAGES, seed=1)
    for round_no in range(ROUNDS):
        layout = DataLayout(tmp_path / f"round{round_no}")
        batches = [f"copy{i}-{round_no}" for i in range(2)]
        for batch in batches:
            folder = layout.incoming / batch / "ref_cam"
            folder.mkdir(parents=True)
            for i, data in enumerate(images):
                (folder / f"img_{i:03d}.png").write_bytes(data)
        summaries = _race(layout, registry, batches)
        assert not [s for s in summaries if isinstance(s, BaseException)], summaries
        accepted = sum(s.accepted for s in summaries)
        duplicate = sum(s.duplicate for s in summaries)
        assert (accepted, duplicate) == (N_IMAGES, N_IMAGES), f"round {round_no}: {accepted} accepted, {duplicate} duplicate"
        assert len(store.list_images(layout)) == N_IMAGES


def test_list_images_gives_one_row_per_image_even_if_two_batches_accepted_it(layout):
    from PIL import Image

    image_id, path, _ = store.put_image(layout, Image.fromarray(np.full((16, 16, 3), 7, np.uint8)))
    rel = store.relative_to_root(layout, path)
    for batch in ("b1", "b2"):
        store.write_batch_catalog(layout, batch, [dict(image_id=image_id, batch=batch, camera="ref_cam", role="hr_reference",
                                                       source_name="x.png", stored_path=rel, outcome=store.ACCEPTED)])
    rows = store.list_images(layout)
    assert list(rows["image_id"]) == [image_id] and rows["batch"].iloc[0] == "b1"


def _ingest_copy(root, cameras_file, src, barrier) -> None:
    from sr_pipeline.common.cameras import load_registry
    from sr_pipeline.intake.ingest import ingest_folder
    from sr_pipeline.storage.layout import DataLayout

    barrier.wait()
    ingest_folder(DataLayout(root), load_registry(cameras_file), src, "ref_cam")


def test_two_ingest_processes_on_two_copies_of_a_folder(tmp_path, cameras_file):
    """The operator's case: two `sr-pipeline ingest` of copies of one folder into one data root."""
    import multiprocessing

    from sr_pipeline.storage.layout import DataLayout

    images = _tiny_pngs(N_IMAGES, seed=2)
    for copy in ("a", "b"):
        (tmp_path / copy).mkdir()
        for i, data in enumerate(images):
            (tmp_path / copy / f"img {i:03d}.png").write_bytes(data)
        (tmp_path / copy / "broken.png").write_bytes(b"")
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_ingest_copy, args=(tmp_path / "data", cameras_file, tmp_path / c, barrier)) for c in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    counts = store.read_catalog(DataLayout(tmp_path / "data"))["outcome"].value_counts().to_dict()
    assert counts == {store.ACCEPTED: N_IMAGES, store.DUPLICATE: N_IMAGES, store.QUARANTINED: 2}
