"""Builders of the same tiny labelled images in every dataset format (for the format tests)."""
from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("cat", "dog")


def images(n: int = 6, seed: int = 0) -> list[tuple[str, int, bytes]]:
    """``(file name, class index, PNG bytes)`` of ``n`` small images of different sizes, two classes."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        pixels = rng.integers(0, 256, size=(10 + i, 12 + 2 * i, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        out.append((f"img{i:02d}.png", i % 2, buffer.getvalue()))
    return out


def tar_of(members: dict[str, bytes], path: Path) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def imagefolder_tar(path: Path, items, classes=CLASSES) -> Path:
    """``class/image.png`` members, in class then file order (the order the other formats use too)."""
    ordered = sorted(items, key=lambda item: (classes[item[1]], item[0]))
    return tar_of({f"{classes[label]}/{name}": data for name, label, data in ordered}, path)


def in_imagefolder_order(items):
    return sorted(items, key=lambda item: (CLASSES[item[1]], item[0]))


def webdataset_shard(path: Path, items) -> Path:
    members = {}
    for name, label, data in items:
        key = name.removesuffix(".png")
        members[f"{key}.png"] = data
        members[f"{key}.cls"] = str(label).encode()
        members[f"{key}.json"] = b"{}"
    return tar_of(members, path)


def parquet_file(path: Path, items, *, hf_struct: bool = True, label_names: bool = False,
                 image_column: str = "image", row_group_size: int | None = None, classes=CLASSES) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if hf_struct:
        column = pa.array([{"bytes": data, "path": None} for _, _, data in items],
                          type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    else:
        column = pa.array([data for _, _, data in items], type=pa.binary())
    labels = pa.array([classes[label] for _, label, _ in items]) if label_names else \
        pa.array([label for _, label, _ in items], type=pa.int64())
    pq.write_table(pa.table({image_column: column, "label": labels}), path, row_group_size=row_group_size)
    return path


def hf_saved(folder: Path, items, classes=CLASSES) -> Path:
    """A Hugging Face dataset saved with ``datasets``' own save_to_disk (Image feature, ClassLabel)."""
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(classes))})
    data = datasets.Dataset.from_dict({"image": [{"bytes": d, "path": None} for _, _, d in items],
                                       "label": [label for _, label, _ in items]}, features=features)
    data.save_to_disk(str(folder))
    return folder


def tar_folder(folder: Path, path: Path, prefix: str = "data/") -> Path:
    return tar_of({f"{prefix}{p.name}": p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}, path)


def zip_folder(folder: Path, path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for p in sorted(folder.iterdir()):
            archive.writestr(p.name, p.read_bytes())
    return path


def image_files(folder: Path, items) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, _, data in items:
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    return paths


def csv_manifest(path: Path, items, folder: Path, *, relative: bool = False, classes=CLASSES) -> Path:
    lines = ["image_uri,label"]
    for name, label, _ in items:
        lines.append(f"{name if relative else (folder / name).as_uri()},{classes[label]}")
    path.write_text("\n".join(lines) + "\n")
    return path


def jsonl_manifest(path: Path, items, folder: Path) -> Path:
    path.write_text("".join(json.dumps({"uri": (folder / name).as_uri(), "label": label}) + "\n"
                            for name, label, _ in items))
    return path
