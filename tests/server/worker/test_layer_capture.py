"""The worker's layer listing says how each layer is captured ("fx" or "hook"), and the API carries it."""
import torch
from torch import nn

import gig
from gigaudit_server.api.models import layers_response
from gigaudit_server.worker.tasks import layer_listing


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GELU())
        self.block = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.GELU())
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.block(self.stem(x)).mean((2, 3)))


def test_fx_and_hooked_listings_carry_the_capture():
    torch.manual_seed(0)
    fx_listing = layer_listing(Net())
    assert {layer["capture"] for layer in fx_listing["layers"]} == {"fx"}
    hooked = gig.configure_tracing(Net(), gig.TracerOptions.from_dict({"hooked_layers": ["stem", "block", "fc"]}),
                                   input_size=8)
    listing = layer_listing(hooked)
    layers = {layer["name"]: layer for layer in listing["layers"]}
    assert {layer["capture"] for layer in layers.values()} == {"hook"}
    assert layers["stem"]["is_cut"] and layers["fc"]["is_cut"] and not layers["fc"]["can_be_source"]
    assert listing["default_layers"] == ["stem", "block"]
    response = layers_response(listing)
    assert {layer.name: layer.capture for layer in response.layers}["block"] == "hook"
    assert [layer.name for layer in response.layers if layer.is_default] == ["stem", "block"]
