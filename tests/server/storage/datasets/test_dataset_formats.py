"""Every dataset format: detected, inspected and decoded to the same tensors as the ImageFolder archive of the same
images; every format refuses unsafe input with a clear error."""
from __future__ import annotations

import io
import os
import tarfile

import pytest
import torch

import dataset_fixtures as F
from gig.preprocessing import Preprocessing
from gigaudit_server.storage.datasets import sources
from gigaudit_server.storage.datasets.archives import DatasetLimits, LimitExceeded
from gigaudit_server.storage.datasets.samples import NotAllowed
from gigaudit_server.worker.images import ArchiveImages

PRE = Preprocessing(8, 8, resize_mode="shorter_side_crop", interpolation="bicubic", mean=(0.5,) * 3, std=(0.25,) * 3)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The same six images in every format, in ImageFolder order (class, then file name)."""
    root = tmp_path_factory.mktemp("formats")
    items = F.in_imagefolder_order(F.images())
    folder = F.image_files(root / "images", items)[0].parent
    hf = F.hf_saved(root / "hf", items)
    (root / "shards").mkdir()
    F.webdataset_shard(root / "shards" / "part-0.tar", items[:4])
    F.webdataset_shard(root / "shards" / "part-1.tar", items[4:])
    (root / "tables").mkdir()
    F.parquet_file(root / "tables" / "a.parquet", items[:3])
    F.parquet_file(root / "tables" / "b.parquet", items[3:])
    return {
        "imagefolder": (F.imagefolder_tar(root / "folder.tar", items), "tar", ["cat", "dog"]),
        "webdataset shard": (F.webdataset_shard(root / "shard.tar", items), "webdataset", ["0", "1"]),
        "webdataset folder": (root / "shards", "webdataset", ["0", "1"]),
        "parquet struct": (F.parquet_file(root / "s.parquet", items, row_group_size=2), "parquet", ["0", "1"]),
        "parquet names": (F.parquet_file(root / "n.parquet", items, hf_struct=False, label_names=True), "parquet",
                          ["cat", "dog"]),
        "parquet folder": (root / "tables", "parquet", ["0", "1"]),
        "hf folder": (hf, "hf_dataset", ["cat", "dog"]),
        "hf tar": (F.tar_folder(hf, root / "hf.tar"), "hf_dataset", ["cat", "dog"]),
        "hf zip": (F.zip_folder(hf, root / "hf.zip"), "hf_dataset", ["cat", "dog"]),
        "csv manifest": (F.csv_manifest(folder / "m.csv", items, folder, relative=True), "csv_manifest",
                         ["cat", "dog"]),
        "jsonl manifest": (F.jsonl_manifest(root / "m.jsonl", items, folder), "jsonl_manifest", ["0", "1"]),
        "root": root,
    }


FORMATS = ["imagefolder", "webdataset shard", "webdataset folder", "parquet struct", "parquet names",
           "parquet folder", "hf folder", "hf tar", "hf zip", "csv manifest", "jsonl manifest"]


@pytest.mark.parametrize("kind", FORMATS)
def test_each_format_is_detected_inspected_and_decoded_like_the_imagefolder(built, kind):
    location, format, classes = built[kind]
    allow = [built["root"].as_uri() + "/"]
    assert sources.detect_format(str(location)) == format
    info = sources.inspect_dataset(str(location), allowlist=allow)
    assert (info.format, info.n_images, info.class_names) == (format, 6, classes)
    assert info.image_sizes == {"min_height": 10, "max_height": 15, "median_height": 12, "min_width": 12,
                                "max_width": 22, "median_width": 16}
    reference = ArchiveImages(str(built["imagefolder"][0]), PRE, batch_size=4, threads=1)
    data = ArchiveImages(str(location), PRE, format=format, class_names=info.class_names, allowlist=allow,
                         batch_size=4, threads=2)
    assert len(data.names) == 6 and data.labels.tolist() == reference.labels.tolist() == [0, 0, 0, 1, 1, 1]
    mine, theirs = torch.cat([b[0] for b in data]), torch.cat([b[0] for b in reference])
    assert mine.shape == (6, 3, 8, 8) and torch.equal(mine, theirs)
    assert torch.equal(data.select([5, 0]), theirs[[5, 0]])


def test_parallel_decoding_gives_the_same_tensors_in_order_and_reports_progress(built):
    location = str(built["parquet struct"][0])
    seen = []
    one = ArchiveImages(location, PRE, format="parquet", batch_size=4, threads=1)
    four = ArchiveImages(location, PRE, format="parquet", batch_size=4, threads=4,
                         progress=lambda done, total: seen.append((done, total)))
    assert torch.equal(torch.cat([b[0] for b in one]), torch.cat([b[0] for b in four]))
    assert seen[-1] == (6, 6)  # the indexing pass
    four.select([1, 3, 5])
    assert seen[-1] == (3, 3)  # a selection: its images decoded


def test_parallel_decoding_is_faster_with_threads(tmp_path):
    """Decoding large PNGs on 4 threads beats 1 thread (PIL releases the GIL) where the machine has the cores."""
    if (os.cpu_count() or 1) < 4:
        pytest.skip("needs 4 CPUs")
    import time

    items = [(f"{i}.png", i % 2, _big_png(i)) for i in range(16)]
    path = F.imagefolder_tar(tmp_path / "big.tar", items)
    times = {}
    for threads in (1, 4):
        data = ArchiveImages(str(path), Preprocessing(64, 64), threads=threads, batch_size=16)
        start = time.perf_counter()
        list(data)
        times[threads] = time.perf_counter() - start
    assert times[4] < times[1]


def _big_png(seed: int) -> bytes:
    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, size=(768, 768, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------- bad inputs
def test_manifest_with_disallowed_uris_is_refused_listing_them_before_any_fetch(built, tmp_path):
    items = F.in_imagefolder_order(F.images())
    manifest = F.jsonl_manifest(tmp_path / "m.jsonl", items, built["root"] / "images")
    with pytest.raises(NotAllowed, match=r"names 6 image URIs off the allowed locations .*img00\.png"):
        sources.inspect_dataset(str(manifest), allowlist=["s3://bucket/"])
    relative = tmp_path / "r.csv"
    relative.write_text("image,label\n../images/img00.png,cat\n")
    with pytest.raises(NotAllowed, match=r"points outside"):
        sources.inspect_dataset(str(relative), allowlist=[tmp_path.as_uri() + "/"])


def test_manifest_with_unreachable_uris_is_refused_listing_the_first_few(built, tmp_path):
    folder = built["root"] / "images"
    lines = ["uri,label"] + [f"{(folder / f'gone{i}.png').as_uri()},cat" for i in range(8)]
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"cannot be read: .*gone0\.png.*gone4\.png") as info:
        sources.inspect_dataset(str(tmp_path / "m.csv"), allowlist=[built["root"].as_uri() + "/"])
    assert "gone5" not in str(info.value)


def test_parquet_without_an_image_column_lists_its_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"pixels": pa.array([b"x"]), "label": pa.array([1])}), tmp_path / "t.parquet")
    with pytest.raises(ValueError, match=r"has no image column .*its columns: pixels \(binary\), label \(int64\)"):
        sources.inspect_dataset(str(tmp_path / "t.parquet"))
    with pytest.raises(ValueError, match=r"no image column 'photo'"):
        sources.inspect_dataset(str(tmp_path / "t.parquet"), image_column="photo")


def test_parquet_row_groups_over_the_block_limit_are_refused_before_reading(tmp_path):
    path = F.parquet_file(tmp_path / "p.parquet", F.images())
    with pytest.raises(LimitExceeded, match="row group 0 .* smaller row groups"):
        sources.inspect_dataset(str(path), DatasetLimits(max_block_bytes=1000))


def test_webdataset_shard_with_a_traversal_path_or_a_bomb_is_refused(tmp_path):
    png = F.images(1)[0][2]
    traversal = F.tar_of({"a.png": png, "a.cls": b"0", "../b.png": png, "../b.cls": b"1"}, tmp_path / "t.tar")
    with pytest.raises(ValueError, match=r"'\.\./b\.png' points outside"):
        sources.inspect_dataset(str(traversal))
    bomb = F.tar_of({"a.png": png, "a.cls": b"0", "b.png": _big_png(0), "b.cls": b"1"}, tmp_path / "bomb.tar")
    with pytest.raises(ValueError, match=r"'b' .*768x768 pixels, more than the limit"):
        sources.inspect_dataset(str(bomb), DatasetLimits(max_image_pixels=256 * 256))
    split = F.tar_of({"a.png": png, "b.png": png, "a.cls": b"0"}, tmp_path / "split.tar")
    with pytest.raises(ValueError, match="not consecutive"):
        sources.inspect_dataset(str(split))
    bad_label = F.tar_of({"a.png": png, "a.cls": b"cat"}, tmp_path / "label.tar")
    with pytest.raises(ValueError, match="not a class index"):
        sources.inspect_dataset(str(bad_label))


def test_hf_dataset_archive_with_a_link_is_refused(built, tmp_path):
    hf = built["hf folder"][0]
    path = tmp_path / "linked.tar"
    with tarfile.open(path, "w") as tar:
        for file in sorted(hf.iterdir()):
            tar.add(file, arcname=f"data/{file.name}")
        link = tarfile.TarInfo("data/extra.arrow")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(ValueError, match=r"'data/extra\.arrow' is a symbolic link"):
        sources.inspect_dataset(str(path))


def test_hf_folder_links_and_dataset_dicts_are_refused(built, tmp_path):
    linked = tmp_path / "linked"
    linked.symlink_to(built["hf folder"][0], target_is_directory=True)
    with pytest.raises(ValueError, match="symbolic link"):
        sources.inspect_dataset(str(linked))
    (tmp_path / "dict").mkdir()
    (tmp_path / "dict" / "dataset_dict.json").write_text('{"splits": ["train"]}')
    with pytest.raises(ValueError, match="DatasetDict"):
        sources.inspect_dataset(str(tmp_path / "dict"))


def test_arrow_batches_over_the_block_limit_are_refused(built):
    with pytest.raises(ValueError, match="more than the limit of 512 bytes per block"):
        sources.inspect_dataset(str(built["hf tar"][0]), DatasetLimits(max_block_bytes=512))


def test_not_a_dataset_is_refused_naming_the_formats(tmp_path):
    (tmp_path / "x.bin").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match="not a dataset: accepted are tar or zip"):
        sources.detect_format(str(tmp_path / "x.bin"))
    with pytest.raises(ValueError, match="no dataset at"):
        sources.detect_format(str(tmp_path / "none"))


def test_in_place_folder_digest_covers_names_sizes_and_contents(built, tmp_path):
    sha, size = sources.content_digest(str(built["webdataset folder"][0]))
    assert size == sum(p.stat().st_size for p in (built["root"] / "shards").iterdir())
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in (built["root"] / "shards").iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    assert sources.content_digest(str(copy))[0] == sha
    (copy / "part-1.tar").write_bytes((copy / "part-1.tar").read_bytes()[:-1] + b"\1")
    assert sources.content_digest(str(copy))[0] != sha
