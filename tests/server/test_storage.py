"""ArtifactStore: content addressing, and failed writes that leave nothing behind."""
import hashlib
import os

import pytest

from gigaudit_server.storage.artifacts import KINDS, ArtifactStore


@pytest.fixture
def store(tmp_path):
    return ArtifactStore(f"file://{tmp_path}/store")


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_objects_are_addressed_by_their_sha256(store, tmp_path):
    data = b"weights" * 1000
    sha = store.put_bytes("weights", data)
    assert sha == hashlib.sha256(data).hexdigest()
    assert store.local_path("weights", sha) == f"{tmp_path}/store/weights/{sha[:2]}/{sha}"
    assert store.read("weights", sha) == data
    assert store.exists("weights", sha) and not store.exists("graphs", sha)
    with store.open("weights", sha) as f:
        assert f.read(7) == b"weights"


def test_stream_in_chunks_with_expected_sha(store):
    chunks = [os.urandom(1000) for _ in range(5)]
    whole = b"".join(chunks)
    sha, size = store.put_stream("datasets", iter(chunks), expected_sha256=hashlib.sha256(whole).hexdigest().upper())
    assert (sha, size) == (hashlib.sha256(whole).hexdigest(), 5000)
    assert store.read("datasets", sha) == whole


def test_same_content_twice_is_one_object(store, tmp_path):
    a = store.put_bytes("graphs", b"{}")
    b = store.put_bytes("graphs", b"{}")
    assert a == b
    assert _files(f"{tmp_path}/store/graphs") == [f"{a[:2]}/{a}"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"expected_sha256": "0" * 64}, "sha256 mismatch"),
        ({"expected_size": 4000}, "truncated"),
        ({"expected_size": 100}, "more than the announced"),
        ({"max_bytes": 2500}, "exceeds the limit"),
    ],
)
def test_failed_write_leaves_nothing_and_keeps_existing_objects(store, tmp_path, kwargs, message):
    data = os.urandom(3000)
    existing = store.put_bytes("weights", data)
    before = {p: open(f"{tmp_path}/store/{p}", "rb").read() for p in _files(f"{tmp_path}/store")}
    with pytest.raises(ValueError, match=message):
        store.put_stream("weights", [data[:1000], data[1000:2000], data[2000:]], **kwargs)
    after = {p: open(f"{tmp_path}/store/{p}", "rb").read() for p in _files(f"{tmp_path}/store")}
    assert after == before
    assert store.read("weights", existing) == data


def test_a_failing_stream_leaves_nothing(store, tmp_path):
    def broken():
        yield b"abc"
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        store.put_stream("weights", broken())
    assert _files(f"{tmp_path}/store") == []


def test_delete_and_missing_objects(store):
    sha = store.put_bytes("concepts", b"x")
    store.delete("concepts", sha)
    assert not store.exists("concepts", sha)
    with pytest.raises(KeyError):
        store.read("concepts", sha)
    with pytest.raises(KeyError):
        store.delete("concepts", sha)


@pytest.mark.parametrize("sha", ["../../etc/passwd", "abc", "g" * 64, "A" * 64])
def test_malformed_sha_is_refused(store, sha):
    with pytest.raises(ValueError, match="sha256"):
        store.read("weights", sha)


def test_unknown_kind_lists_the_kinds(store):
    with pytest.raises(ValueError, match="valid kinds are: " + ", ".join(KINDS)):
        store.put_bytes("secrets", b"x")


def test_memory_store_works_but_has_no_local_path():
    store = ArtifactStore("memory://gigaudit-test-store")
    sha = store.put_bytes("graphs", b"[1]")
    assert store.read("graphs", sha) == b"[1]"
    with pytest.raises(ValueError, match="not a local store"):
        store.local_path("graphs", sha)
    store.delete("graphs", sha)
