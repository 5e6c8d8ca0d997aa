"""Archive checks read in one bounded pass: bombs, damaged archives and hostile headers are refused with a
``ValueError`` (``LimitExceeded`` for counts) while memory stays small, whatever the archive declares."""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import struct
import tarfile
import tracemalloc
import zipfile

import bad_inputs
import pytest

from gigaudit_server.storage.datasets.archives import DatasetLimits, LimitExceeded, inspect_archive

MiB = 1024**2
COMPRESS = {"gz": lambda d: gzip.compress(d, mtime=0), "bz2": bz2.compress, "xz": lambda d: lzma.compress(d, preset=0)}


def tar_header(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.type = size, kind
    return info.tobuf(format=tarfile.GNU_FORMAT)


def tar_member(name: str, data: bytes) -> bytes:
    return tar_header(name, len(data)) + data + bytes(-len(data) % 512)


def compressed_bomb(kind: str, zeros: int, after: bytes) -> bytes:
    """A compressed tar whose first member is ``zeros`` bytes of zeros (hidden), then ``after``: concatenated
    streams, so building it never holds the expanded bytes."""
    block = COMPRESS[kind](bytes(64 * MiB))
    assert zeros % (64 * MiB) == 0
    return (COMPRESS[kind](tar_header(".padding", zeros)) + block * (zeros // (64 * MiB))
            + COMPRESS[kind](after + bytes(1024)))


def peak_bytes(call) -> tuple[int, object]:
    """The peak of Python allocations while ``call()`` runs, and what it returned or raised."""
    tracemalloc.start()
    try:
        try:
            result = call()
        except ValueError as exc:
            result = exc
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("kind", ["gz", "bz2", "xz"])
def test_compressed_tars_are_read_in_bounded_steps(kind):
    png = bad_inputs.png()
    archive = compressed_bomb(kind, 256 * MiB, tar_member("cat/a.png", png))
    assert len(archive) < 1 * MiB
    peak, info = peak_bytes(lambda: inspect_archive(io.BytesIO(archive)))
    assert info.n_images == 1 and info.class_names == ["cat"], info
    assert peak < 8 * MiB, f"{peak / MiB:.1f} MiB allocated to skip 256 MiB of {kind} zeros"


@pytest.mark.parametrize("kind", ["gz", "bz2", "xz"])
def test_a_member_declaring_gigabytes_is_refused_before_it_is_read(kind):
    archive = COMPRESS[kind](tar_header("cat/bomb.png", 4 * 1024**3)) + COMPRESS[kind](bytes(64 * MiB)) * 4
    peak, error = peak_bytes(lambda: inspect_archive(io.BytesIO(archive), DatasetLimits(max_total_bytes=8 * 1024**3)))
    assert isinstance(error, ValueError) and "'cat/bomb.png' declares 4294967296 bytes" in str(error)
    assert peak < 8 * MiB


def test_the_running_total_counts_skipped_members():
    archive = compressed_bomb("gz", 64 * MiB, tar_member("cat/a.png", bad_inputs.png()))
    with pytest.raises(ValueError, match=r"expands beyond 33554432 bytes at member '\.padding'"):
        inspect_archive(io.BytesIO(archive), DatasetLimits(max_total_bytes=32 * MiB))


def test_images_are_read_up_to_the_per_image_limit():
    big = bad_inputs.png() + bytes(2 * MiB)  # a PNG with trailing bytes: valid, 2 MiB
    archive = io.BytesIO(tar_member("cat/a.png", big) + bytes(1024))
    assert inspect_archive(archive).total_bytes == len(big)
    with pytest.raises(ValueError, match=r"image 'cat/a\.png' declares \d+ bytes, more than the limit of 1048576"):
        inspect_archive(io.BytesIO(archive.getvalue()), DatasetLimits(max_image_bytes=MiB))


@pytest.mark.parametrize("build, message", [
    (bad_inputs.truncated_tar, "tar archive is truncated or corrupt"),
    (bad_inputs.truncated_tar_gz, "tar archive is truncated or corrupt"),
    (bad_inputs.corrupt_zip, r"zip archive is truncated or corrupt at member 'class1/1\.png'"),
    (bad_inputs.truncated_zip, "zip archive is truncated or corrupt"),
    (lambda: bad_inputs.image_tar(4)[:512 + 100], "tar archive is truncated or corrupt"),  # cut inside data
    (lambda: bad_inputs.image_tar(4)[:1024 + 100], "tar archive is truncated or corrupt"),  # cut inside a header
    (lambda: bz2.compress(bad_inputs.image_tar(4))[:-40], "tar archive is truncated or corrupt"),
    (lambda: lzma.compress(bad_inputs.image_tar(4))[:-40], "tar archive is truncated or corrupt"),
], ids=["tar", "tar-gz", "zip-data", "zip-directory", "tar-data", "tar-header", "tar-bz2", "tar-xz"])
def test_damaged_archives_are_named_truncated_or_corrupt(build, message):
    with pytest.raises(ValueError, match=message) as info:
        inspect_archive(io.BytesIO(build()))
    assert not isinstance(info.value, LimitExceeded)


def test_a_header_garbled_mid_archive_is_corrupt_not_the_end():
    data = bytearray(bad_inputs.image_tar(4))
    data[1024 + 148:1024 + 156] = b"garbage!"  # the second header's checksum
    with pytest.raises(ValueError, match="truncated or corrupt at byte 1024"):
        inspect_archive(io.BytesIO(bytes(data)))


@pytest.mark.parametrize("compressed", [False, True])
def test_names_that_are_not_utf8_are_refused_naming_the_member(compressed):
    with pytest.raises(ValueError, match=r"member '\\udcff/1\.png' has a name that is not valid UTF-8"):
        inspect_archive(io.BytesIO(bad_inputs.non_utf8_class_tar(compressed)))


def test_zip_names_are_read_as_utf8_and_other_bytes_refused():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("cat/1.png", bad_inputs.png())
        archive.writestr("dog/1.png", bad_inputs.png())
    data = out.getvalue().replace(b"dog/", b"\xff\xfeg/")  # unflagged, not UTF-8 (zipfile would read cp437)
    with pytest.raises(ValueError, match=r"member '\\udcff\\udcfeg/1\.png' has a name that is not valid UTF-8"):
        inspect_archive(io.BytesIO(data))
    utf8 = out.getvalue().replace(b"dog/", "dö/".encode())  # UTF-8 without the flag: read as UTF-8
    assert inspect_archive(io.BytesIO(utf8)).class_names == ["cat", "dö"]


@pytest.mark.parametrize("name", ["cat/a\x01.png", "c\x7fat/a.png", "cat/a\u0085.png", "cat/\nb.png"])
def test_control_characters_in_names_are_refused(name):
    with pytest.raises(ValueError, match="has a control character in its name") as info:
        inspect_archive(io.BytesIO(tar_member(name, bad_inputs.png()) + bytes(1024)))
    assert repr(name) in str(info.value)


def test_oversized_tar_extension_headers_are_refused_before_they_are_read():
    archive = tar_header("././@LongLink", 512 * MiB, tarfile.GNUTYPE_LONGNAME)  # nothing follows: never read
    peak, error = peak_bytes(lambda: inspect_archive(io.BytesIO(archive)))
    assert isinstance(error, ValueError) and "extension header at byte 0 declares 536870912 bytes" in str(error)
    assert peak < 2 * MiB


def test_chained_pax_headers_are_corrupt_not_a_crash():
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("cat/" + "x" * 200 + ".png")  # a long name: written as a pax header first
        info.size = 0
        tar.addfile(info)
    pax = out.getvalue()[:1024]  # the pax header and its record
    with pytest.raises(ValueError, match="corrupt"):
        inspect_archive(io.BytesIO(pax * 5000 + out.getvalue()))


def test_sparse_members_are_refused():
    archive = tar_header("cat/a.png", 100, tarfile.GNUTYPE_SPARSE) + bytes(2048)
    with pytest.raises(ValueError, match=r"'cat/a\.png' is a sparse file"):
        inspect_archive(io.BytesIO(archive))


def _zip(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def test_a_zip_member_holding_more_than_it_declares_is_corrupt_and_read_only_to_its_declared_size():
    data = bytearray(_zip({"cat/a.png": bad_inputs.png() + bytes(16 * MiB)}))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        info = archive.infolist()[0]
    declared = struct.pack("<I", 1000)
    data[info.header_offset + 22:info.header_offset + 26] = declared  # local header: uncompressed size
    directory = bytes(data).rindex(b"PK\x01\x02")
    data[directory + 24:directory + 28] = declared  # central directory: uncompressed size
    peak, error = peak_bytes(lambda: inspect_archive(io.BytesIO(bytes(data))))
    assert isinstance(error, ValueError) and "zip archive is truncated or corrupt at member 'cat/a.png'" in str(error)
    assert peak < 4 * MiB


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_zip_members_compressed_without_bounded_steps_are_refused(method):
    with pytest.raises(ValueError, match=rf"'cat/a\.png' uses zip compression method {method}; accepted: stored"):
        inspect_archive(io.BytesIO(_zip({"cat/a.png": bad_inputs.png()}, method)))


def test_a_zip_directory_listing_more_members_than_allowed_is_refused_before_it_is_parsed():
    archive = _zip({f"{i}.png": b"" for i in range(40)}, zipfile.ZIP_STORED)
    with pytest.raises(LimitExceeded, match="more than 30 members"):
        inspect_archive(io.BytesIO(archive), DatasetLimits(max_members=30))
    with pytest.raises(LimitExceeded, match="more than 30 members"):
        inspect_archive(io.BytesIO(tar_member(".x", b"") * 40), DatasetLimits(max_members=30))


def test_images_only_decode_as_the_accepted_formats():
    gif = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (4, 4)).save(gif, format="GIF")
    with pytest.raises(ValueError, match=r"image 'cat/a\.png' is corrupt or not an image"):
        inspect_archive(io.BytesIO(tar_member("cat/a.png", gif.getvalue()) + bytes(1024)))
