"""Dataset archives: layout, labels, and refusal of every unsafe member, named."""
import io
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib

import pytest
import torch
from PIL import Image

from gig.preprocessing import Preprocessing
from gigaudit_server.storage.datasets.archives import DatasetLimits, inspect_archive
from gigaudit_server.worker.images import ArchiveImages, load_images


def squash(height, width, mean=0.0, std=1.0):
    """The service's former transform: an exact (squash) bilinear resize, then (x - mean) / std."""
    return Preprocessing(height, width, resize_mode="exact", mean=(mean,) * 3, std=(std,) * 3)


def png(color=(255, 0, 0), size=(6, 4)):
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def png_declaring(width, height):
    """A tiny valid PNG whose header claims ``width x height`` pixels."""
    data = bytearray(png())
    ihdr = 8 + 8  # signature, then length + type of the IHDR chunk
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4:ihdr + 13])))
    return bytes(data)


def tar_of(members, mode="w"):
    """``members``: name -> bytes, or a TarInfo for special members."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as tar:
        for name, data in members.items():
            if isinstance(data, tarfile.TarInfo):
                tar.addfile(data)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    out.seek(0)
    return out


def zip_of(members):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            if isinstance(data, zipfile.ZipInfo):
                z.writestr(data, b"target.png")
            else:
                z.writestr(name, data)
    out.seek(0)
    return out


LABELLED = {"dog/2.png": png((0, 0, 255)), "cat/3.png": png((0, 255, 0)), "cat/1.png": png((255, 0, 0))}


@pytest.mark.parametrize("build", [tar_of, zip_of, lambda m: tar_of(m, "w:gz")])
def test_imagefolder_layout(build):
    info = inspect_archive(build(LABELLED))
    assert (info.n_images, info.class_names) == (3, ["cat", "dog"])
    assert info.format == ("zip" if build is zip_of else "tar")
    assert info.total_bytes == sum(len(v) for v in LABELLED.values())


def test_flat_layout_is_unlabelled_and_hidden_files_are_skipped():
    members = {"b.png": png(), "./a.jpg": png(), ".DS_Store": b"junk", "__MACOSX/._a.jpg": b"junk"}
    info = inspect_archive(zip_of(members))
    assert (info.n_images, info.class_names) == (2, [])


@pytest.mark.parametrize("build", [tar_of, zip_of, lambda m: tar_of(m, "w:gz")])
def test_load_images_in_archive_order_with_labels_normalised(tmp_path, build):
    path = tmp_path / "data"
    path.write_bytes(build(LABELLED).getvalue())
    images, labels, names = load_images(str(path), squash(8, 10, 0.5, 0.5))
    assert names == ["dog/2.png", "cat/3.png", "cat/1.png"]
    assert labels.tolist() == [1, 0, 0]  # classes sorted: cat, dog
    assert images.shape == (3, 3, 8, 10) and images.dtype == torch.float32
    assert torch.allclose(images[2, :, 4, 5], torch.tensor([1.0, -1.0, -1.0]))  # red
    assert torch.allclose(images[0, :, 0, 0], torch.tensor([-1.0, -1.0, 1.0]))  # blue
    part, part_labels, part_names = load_images(str(path), squash(8, 10, 0.5, 0.5), start=1, stop=3)
    assert part_names == names[1:] and part_labels.tolist() == [0, 0]
    assert torch.equal(part, images[1:])


def test_archive_images_stream_batches_and_select(tmp_path):
    members = {f"c{i % 2}/{i:02d}.png": png((10 * i, 0, 0)) for i in range(7)}
    path = tmp_path / "data.tar.gz"
    path.write_bytes(tar_of(members, "w:gz").getvalue())
    data = ArchiveImages(str(path), squash(4, 4), start=1, batch_size=3, class_map=[5, 2])
    batches = list(data)
    assert len(data) == 2 and [b[0].shape[0] for b in batches] == [3, 3]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, data))  # re-iterable: a second pass, same images
    assert torch.cat([b[1] for b in batches]).tolist() == [2, 5, 2, 5, 2, 5]  # c1 -> 2, c0 -> 5
    reds = torch.cat([b[0] for b in batches])[:, 0, 0, 0] * 255
    assert torch.allclose(reds, torch.tensor([10.0, 20, 30, 40, 50, 60]))
    chosen = data.select([4, 0, 4])
    assert torch.allclose(chosen[:, 0, 0, 0] * 255, torch.tensor([50.0, 10, 50]))
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        data.select([6])


def test_load_flat_has_no_labels(tmp_path):
    path = tmp_path / "flat.zip"
    path.write_bytes(zip_of({"x.png": png(), "y.png": png()}).getvalue())
    images, labels, names = load_images(str(path), squash(4, 4))
    assert labels is None and names == ["x.png", "y.png"] and images.shape == (2, 3, 4, 4)


def _special(name, kind, linkname="cat/1.png"):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


@pytest.mark.parametrize(
    "members, message",
    [
        ({"../evil.png": png()}, r"'\.\./evil\.png' points outside"),
        ({"cat/../../evil.png": png()}, "points outside"),
        ({"/etc/evil.png": png()}, r"'/etc/evil\.png' has an absolute path"),
        ({"C:/evil.png": png()}, "absolute path"),
        ({"cat\\evil.png": png()}, "backslash"),
        ({"cat/link.png": _special("cat/link.png", tarfile.SYMTYPE)}, r"'cat/link\.png' is a symbolic link"),
        ({"cat/hard.png": _special("cat/hard.png", tarfile.LNKTYPE)}, "is a hard link"),
        ({"cat/dev.png": _special("cat/dev.png", tarfile.CHRTYPE)}, "device or fifo"),
        ({"cat/fifo.png": _special("cat/fifo.png", tarfile.FIFOTYPE)}, "device or fifo"),
        ({"notes.txt": b"hello"}, r"'notes\.txt' is not an image"),
        ({"cat/a.png": png(), "b.png": png()}, r"'b\.png' breaks the layout"),
        ({"a/b/c.png": png()}, "breaks the layout"),
        ({"cat/broken.png": png()[:30]}, r"image 'cat/broken\.png' is corrupt"),
        ({"cat/fake.jpg": b"this is not a jpeg"}, r"image 'cat/fake\.jpg' is corrupt"),
        ({}, "no images"),
    ],
)
def test_unsafe_or_bad_members_are_named(members, message):
    with pytest.raises(ValueError, match=message):
        inspect_archive(tar_of({"cat/1.png": png(), **members} if members else {}))


def test_zip_symlink_is_refused():
    link = zipfile.ZipInfo("cat/link.png")
    link.external_attr = (0o120777 << 16)
    with pytest.raises(ValueError, match=r"'cat/link\.png' is a symbolic link"):
        inspect_archive(zip_of({"cat/1.png": png(), "cat/link.png": link}))


def test_zip_with_absolute_and_dotdot_names():
    for name in ("/abs.png", "../up.png"):
        with pytest.raises(ValueError, match="absolute path|points outside"):
            inspect_archive(zip_of({name: png()}))


@pytest.mark.parametrize("width, height", [(5000, 5000), (100_000, 100_000)])
def test_png_declaring_huge_dimensions_is_refused_before_decoding(width, height):
    bomb = png_declaring(width, height)
    assert len(bomb) < 100
    with pytest.raises(ValueError, match=r"image 'cat/bomb\.png' .*(decompression bomb|DecompressionBomb)"):
        inspect_archive(zip_of({"cat/bomb.png": bomb}))


def test_zip_bomb_by_total_size():
    zeros = bytes(20 * 1024 * 1024)  # compresses to ~20 kB
    archive = zip_of({"cat/a.png": zeros, "cat/b.png": zeros})
    assert len(archive.getvalue()) < 100_000
    with pytest.raises(ValueError, match=r"expands beyond 10000000 bytes at member 'cat/a\.png'"):
        inspect_archive(archive, DatasetLimits(max_total_bytes=10_000_000))


def test_image_count_limit():
    members = {f"{i}.png": png() for i in range(4)}
    with pytest.raises(ValueError, match="more than 3 images"):
        inspect_archive(tar_of(members), DatasetLimits(max_images=3))


def test_not_an_archive():
    with pytest.raises(ValueError, match="tar .* or a zip"):
        inspect_archive(io.BytesIO(b"just some bytes" * 100))


def test_inspect_is_torch_free(tmp_path):
    path = tmp_path / "d.tar"
    path.write_bytes(tar_of(LABELLED).getvalue())
    code = ("import sys; from gigaudit_server.storage.datasets.archives import inspect_archive; "
            f"print(inspect_archive(open({str(path)!r}, 'rb')).n_images); assert 'torch' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3"
