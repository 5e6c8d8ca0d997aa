"""gig.data: batches from tensors, lists, generators and DataLoaders; every bad input is a ValueError."""
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gig.data import check_images, check_reiterable, eval_mode, iter_batches, n_batches


def test_tensor_list_and_pairs():
    x = torch.randn(4, 3, 8, 8)
    (only,) = list(iter_batches(x))
    assert only.images is x and only.labels is None
    pairs = list(iter_batches([(x, torch.tensor([0, 1, 2, 3])), (x[:2], [1, 1])]))
    assert [b.images.shape[0] for b in pairs] == [4, 2]
    assert pairs[1].labels.dtype == torch.long and pairs[1].labels.tolist() == [1, 1]


def test_dataloader_and_generator():
    loader = DataLoader(TensorDataset(torch.randn(10, 3, 8, 8), torch.arange(10)), batch_size=4)
    batches = list(iter_batches(loader))
    assert [b.images.shape[0] for b in batches] == [4, 4, 2]
    assert torch.cat([b.labels for b in batches]).tolist() == list(range(10))
    assert n_batches(loader) == 3
    gen = (torch.randn(2, 3, 4, 4) for _ in range(3))
    assert n_batches(gen) is None
    with pytest.raises(ValueError, match="one-shot"):
        check_reiterable(gen)
    assert sum(b.images.shape[0] for b in iter_batches(gen)) == 6
    check_reiterable([1])  # lists start over


@pytest.mark.parametrize("data", [
    [],
    torch.randn(0, 3, 4, 4),
    [torch.randn(2, 1, 4, 4)],
    [torch.randn(3, 4, 4)],
    [torch.ones(2, 3, 4, 4, dtype=torch.uint8)],
    [torch.full((2, 3, 4, 4), float("nan"))],
    [(torch.randn(2, 3, 4, 4), torch.tensor([0, 1, 2]))],
    [(torch.randn(2, 3, 4, 4), torch.tensor([0.5, 1.0]))],
    [(torch.randn(2, 3, 4, 4), torch.tensor([0, 1]), "extra")],
    ["not an image"],
    42,
])
def test_bad_data(data):
    with pytest.raises(ValueError):
        list(iter_batches(data))


def test_check_images_names_the_problem():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        check_images(torch.randn(2, 4, 4, 4))
    with pytest.raises(ValueError, match="NaN"):
        check_images(torch.tensor([[[[float("inf")]]] * 3]).reshape(1, 3, 1, 1))


def test_eval_mode_restores_modes():
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
    net.train()
    net[0].eval()
    with eval_mode(net):
        assert not any(m.training for m in net.modules())
    assert net.training and net[1].training and not net[0].training
