"""Weights: safetensors only, strict key/shape checks, and the LRU cache of resident models."""
import io
import pickle

import pytest
import safetensors.torch
import torch

from gigaudit_server.storage.artifacts import ArtifactStore
from gigaudit_server.worker.architectures import build_architecture
from gigaudit_server.worker.models import ModelCache, load_model, read_safetensors

ARCH = "squeezenet1_1"  # small and fast to build


@pytest.fixture(scope="module")
def trained():
    model = build_architecture(ARCH, 3)
    return model, safetensors.torch.save(model.state_dict())


def test_round_trip_gives_the_same_function(trained):
    model, data = trained
    loaded = load_model(ARCH, 3, data)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())


def test_pickle_is_refused_without_being_loaded(trained):
    model, _ = trained
    legacy = io.BytesIO()
    torch.save(model.state_dict(), legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match="pickle"):
        load_model(ARCH, 3, legacy.getvalue())
    with pytest.raises(ValueError, match="pickle"):
        read_safetensors(pickle.dumps({"a": 1}))


def test_zip_formats_are_refused(trained):
    model, _ = trained
    modern = io.BytesIO()
    torch.save(model.state_dict(), modern)
    scripted = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), scripted)
    for data in (modern.getvalue(), scripted.getvalue()):
        with pytest.raises(ValueError, match="zip archive.*only safetensors"):
            load_model(ARCH, 3, data)


@pytest.mark.parametrize("cut", [4, 100, -10])
def test_truncated_safetensors(trained, cut):
    _, data = trained
    with pytest.raises(ValueError, match="not a valid safetensors"):
        read_safetensors(data[:cut])


def test_shape_mismatch_names_the_keys(trained):
    _, data = trained
    with pytest.raises(ValueError, match=r"mis-shaped keys: classifier\.1\.weight \(weights \[3, 512, 1, 1\], "
                                         r"squeezenet1_1 with 5 classes \[5, 512, 1, 1\]\)"):
        load_model(ARCH, 5, data)


def test_missing_and_unexpected_keys_are_listed(trained):
    model, _ = trained
    state = dict(model.state_dict())
    state["extra.weight"] = state.pop("features.0.weight")
    with pytest.raises(ValueError) as info:
        load_model(ARCH, 3, safetensors.torch.save(state))
    assert "missing keys: features.0.weight" in str(info.value)
    assert "unexpected keys: extra.weight" in str(info.value)


def test_another_architecture_lists_many_keys_briefly(trained):
    _, data = trained
    with pytest.raises(ValueError, match=r"missing keys: .* and \d+ more"):
        load_model("mobilenet_v3_small", 3, data)


def test_non_finite_weights(trained):
    model, _ = trained
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["features.0.bias"][0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf: features.0.bias"):
        load_model(ARCH, 3, safetensors.torch.save(state))


def test_cache_is_lru_by_sha_and_device(tmp_path):
    store = ArtifactStore(f"file://{tmp_path}")
    shas = [store.put_bytes("weights", safetensors.torch.save(build_architecture(ARCH, 2).state_dict()))
            for _ in range(3)]
    cache = ModelCache(store, capacity=2)
    record = lambda sha: {"architecture": ARCH, "num_classes": 2, "weights_sha256": sha}  # noqa: E731
    first = cache.get(record(shas[0]))
    assert cache.get(record(shas[0]), "cpu") is first  # resident: same object
    cache.get(record(shas[1]))
    cache.get(record(shas[0]))  # touch 0, so 1 is the least recently used
    cache.get(record(shas[2]))
    assert len(cache) == 2
    assert ModelCache.key(record(shas[0])) in cache and ModelCache.key(record(shas[1]), "cpu") not in cache
    assert cache.get(record(shas[1])) is not None
    with pytest.raises(ValueError, match="weights_sha256"):
        cache.get({"architecture": ARCH, "num_classes": 2})
    with pytest.raises(KeyError):
        cache.get(record("0" * 64))
