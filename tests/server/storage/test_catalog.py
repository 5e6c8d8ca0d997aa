"""The catalog against a real Redis: atomic creates, pages, children, users and blob references."""
from __future__ import annotations

import threading

import pytest

from gigaudit_server import keys
from gigaudit_server.storage.catalog import AlreadyExists, Catalog, InUse


@pytest.fixture
def catalog(redis_client):
    return Catalog(redis_client)


def test_create_is_atomic_and_refuses_a_taken_id(catalog):
    record = catalog.create("models", "m", {"name": "models/m"})
    assert catalog.get("models", "m") == record
    with pytest.raises(AlreadyExists):
        catalog.create("models", "m", {"name": "other"})
    assert catalog.update("models", "m", state="X")["state"] == "X"
    catalog.delete("models", "m")
    with pytest.raises(KeyError):
        catalog.get("models", "m")
    with pytest.raises(ValueError, match="valid: models"):
        catalog.get("nonsense", "m")


def test_pages_cover_every_record_once_and_filters_keep_their_own_tokens(catalog):
    for i in range(7):
        catalog.create("datasets", f"d{i}", {"i": i, "create_time": float(i)})
    seen, token = [], ""
    while True:
        page, token = catalog.list("datasets", page_size=3, page_token=token)
        seen += [r["i"] for r in page]
        if not token:
            break
    assert seen == list(range(7))
    even, token = catalog.list("datasets", page_size=2, accept=lambda _, r: r["i"] % 2 == 0, scope="even")
    rest, last = catalog.list("datasets", page_size=2, page_token=token, accept=lambda _, r: r["i"] % 2 == 0,
                              scope="even")
    assert [r["i"] for r in even + rest] == [0, 2, 4, 6] and last == ""
    with pytest.raises(ValueError, match="does not belong"):
        catalog.list("models", page_token=catalog.list("datasets", page_size=3)[1])
    with pytest.raises(ValueError, match="does not belong"):
        catalog.list("datasets", page_token=token)  # a filtered listing's token on the unfiltered one
    for forged in ("nonsense", "eyJvIjogLTF9", "W10=", "eyJvIjogMSwgInMiOiBbXX0="):
        with pytest.raises(ValueError):
            catalog.list("datasets", page_token=forged)


def test_children_block_a_delete_and_a_parent_deleted_first_refuses_the_child(catalog):
    catalog.create("models", "m", {"name": "models/m"})
    catalog.create("datasets", "d", {"name": "datasets/d"})
    parents = [("models", "m"), ("datasets", "d")]
    catalog.create_many([("conceptSets", "m/s", {"name": "s"}, parents),
                         ("conceptGraphs", "m/g", {"name": "g"}, [*parents, ("conceptSets", "m/s")])])
    assert catalog.children("models", "m") == ["conceptGraphs/m/g", "conceptSets/m/s"]
    assert catalog.children("conceptSets", "m/s") == ["conceptGraphs/m/g"]
    with pytest.raises(InUse) as info:
        catalog.delete("models", "m")
    assert info.value.children == ["conceptGraphs/m/g", "conceptSets/m/s"]
    catalog.delete("conceptGraphs", "m/g")
    catalog.delete("conceptSets", "m/s")
    assert catalog.children("models", "m") == [] and catalog.children("datasets", "d") == []
    catalog.delete("models", "m")
    with pytest.raises(KeyError, match="models/m"):
        catalog.create("conceptSets", "m/t", {"name": "t"}, parents=[("models", "m")])
    with pytest.raises(KeyError):
        catalog.get("conceptSets", "m/t")


def test_a_create_racing_a_delete_never_leaves_a_child_of_a_deleted_parent(catalog, redis_client):
    for round_ in range(20):
        catalog.create("models", f"m{round_}", {"name": "m"})
        outcome = {}

        def create():
            try:
                catalog.create("conceptSets", f"m{round_}/s", {"name": "s"}, parents=[("models", f"m{round_}")])
                outcome["create"] = True
            except KeyError:
                outcome["create"] = False

        def delete():
            try:
                catalog.delete("models", f"m{round_}")
                outcome["delete"] = True
            except InUse:
                outcome["delete"] = False

        threads = [threading.Thread(target=create), threading.Thread(target=delete)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not (outcome["create"] and outcome["delete"]), f"round {round_}: both succeeded"


def test_unfinished_users_block_a_delete_unless_ignored(catalog, redis_client):
    catalog.create("datasets", "d", {"name": "datasets/d"})
    redis_client.hset(keys.job("j1"), mapping={"state": "RUNNING"})
    redis_client.hset(keys.job("j2"), mapping={"state": "SUCCEEDED"})
    catalog.add_user("datasets", "d", "j1")
    catalog.add_user("datasets", "d", "j2")
    assert catalog.users("datasets", "d") == ["j1"]
    with pytest.raises(InUse) as info:
        catalog.delete("datasets", "d")
    assert info.value.users == ["j1"]
    catalog.delete("datasets", "d", ignore_users=True)


def test_blob_references_count_records_and_uploads_and_mark_the_last_delete(catalog, redis_client):
    sha = "ab" * 32
    catalog.pin_blob("weights", sha)  # upload 1, taken over by model a
    catalog.create("models", "a", {"weights_sha256": sha})
    catalog.pin_blob("weights", sha)  # upload 2 of the same bytes, in flight
    assert catalog.blob_refs("weights", sha) == 2
    assert catalog.delete("models", "a", blob=("weights", sha))["blob_unreferenced"] is False
    assert catalog.unpin_blob("weights", sha) is True  # upload 2 failed: nobody needs the file any more
    assert redis_client.exists(keys.blob_deleting("weights", sha))
    waited = threading.Event()

    def pin_while_deleting():
        catalog.pin_blob("weights", sha)
        waited.set()

    thread = threading.Thread(target=pin_while_deleting)
    thread.start()
    assert not waited.wait(0.3), "an upload of the same bytes waits while the file is being deleted"
    catalog.blob_deleted("weights", sha)
    thread.join(5)
    assert waited.is_set() and catalog.blob_refs("weights", sha) == 1
