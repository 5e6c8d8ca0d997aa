"""The CLI's preprocessing flags: parsed into a Preprocessing request, part of the model's id, resolved by the server
(the flags over the model's own configuration) and printed once as the server resolved it (real embedded server)."""
from __future__ import annotations


import pytest

from gigaudit import AuditClient, cli, preprocessing
from gigaudit.v1 import dataset_service_pb2 as dataset_pb
from gigaudit.v1 import model_service_pb2 as model_pb

gig_synthetic = pytest.importorskip("gig.synthetic")
from gigaudit.embedded import embedded_server  # noqa: E402

WEIGHTS = gig_synthetic.ASSETS / "partsnet.safetensors"
SQUARE = dataset_pb.Dataset(image_sizes=dataset_pb.ImageSizes(min_height=40, max_height=40, median_height=40,
                                                               min_width=40, max_width=40, median_width=40))


def _args(*flags: str, arch: str = "partsnet", model=WEIGHTS, classes: int = 6):
    return cli._parser().parse_args(["audit", "--model", str(model), "--arch", arch, "--num-classes", str(classes),
                                     "--dataset", "d", "--out", "o", *flags])


def test_flags_become_a_preprocessing_request(capsys):
    args = _args("--input-size", "48x64", "--resize", "exact", "--crop-pct", "0.9", "--interpolation", "bicubic",
                 "--mean", "0.5", "0.5", "0.5")
    cli._choose_preprocessing(args, SQUARE)
    request = args.transform.request()
    assert (request.height, request.width, request.crop_pct) == (48, 64, pytest.approx(0.9))
    assert request.resize_mode == model_pb.RESIZE_MODE_EXACT
    assert request.interpolation == model_pb.INTERPOLATION_BICUBIC
    assert list(request.mean) == [0.5] * 3 and not request.std  # --std not given: left to the server
    assert args.input_size == 0  # not square: no input_size shorthand
    assert "resize to 64x48 px: 71x53 (aspect ratio not kept), centre crop (bicubic)" in capsys.readouterr().err
    plain = _args()
    cli._choose_preprocessing(plain, SQUARE)
    assert plain.transform.request() == model_pb.Preprocessing() and plain.input_size == 40  # the data's size
    assert "shorter side to 40, centre crop (bilinear)" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--input-size", "64x"], "input size must be N or HxW"),
    (["--input-size", "0"], "must lie in 1..4096"),
    (["--crop-pct", "1.5"], r"--crop-pct must lie in \(0, 1\]"),
    (["--resize", "squash"], "invalid choice: 'squash'"),
    (["--interpolation", "area"], "invalid choice: 'area'"),
])
def test_bad_flags_are_refused_clearly(flags, message, capsys):
    with pytest.raises(SystemExit):
        _args(*flags)
    assert __import__("re").search(message, capsys.readouterr().err)


@pytest.fixture(scope="module")
def client():
    with embedded_server() as target, AuditClient(target, timeout=120) as c:
        yield c


def test_requested_preprocessing_is_registered_and_part_of_the_id(client, capsys):
    args = _args("--input-size", "32", "--resize", "exact", "--interpolation", "bicubic", "--mean", "0", "0", "0",
                 "--std", "1", "1", "1")
    args.timeout = 120.0
    cli._choose_preprocessing(args, SQUARE)
    model = cli._register_model(args, client, progress=False)
    got = preprocessing.resolved(model)
    assert (got["height"], got["width"], got["resize_mode"], got["interpolation"], got["crop_pct"]) == (
        32, 32, "exact", "bicubic", 1.0)
    assert got["source"] == "request; defaults"
    err = capsys.readouterr().err
    assert err.count("transform:") == 1  # the server resolved what the CLI said: not said twice
    again = _args("--input-size", "32", "--resize", "exact", "--interpolation", "bicubic", "--mean", "0", "0", "0",
                  "--std", "1", "1", "1")
    again.timeout = 120.0
    cli._choose_preprocessing(again, SQUARE)
    assert cli._register_model(again, client, progress=False).name == model.name
    other = _args("--input-size", "32", "--crop-pct", "0.875", "--mean", "0", "0", "0", "--std", "1", "1", "1")
    other.timeout = 120.0
    cli._choose_preprocessing(other, SQUARE)
    cropped = cli._register_model(other, client, progress=False)
    assert cropped.name != model.name and preprocessing.resolved(cropped)["resize_mode"] == "shorter-side-crop"
    assert preprocessing.resolved(cropped)["crop_pct"] == pytest.approx(0.875)


def test_a_timm_models_own_configuration_is_printed_after_registration(client, tmp_path, capsys):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    weights = tmp_path / "tiny.safetensors"
    save_file(timm.create_model("test_resnet", pretrained=False, num_classes=3).state_dict(), weights)
    args = _args("--interpolation", "bicubic", arch="timm:test_resnet", model=weights, classes=3)
    args.timeout = 120.0
    cli._choose_preprocessing(args, SQUARE)
    assert "transform:" not in capsys.readouterr().err  # not known before the server reads the model
    model = cli._register_model(args, client, progress=False)
    err = capsys.readouterr().err
    # timm's pretrained_cfg: 160 px, crop_pct 0.95, mean/std 0.5; the flag's filter over timm's bilinear
    assert ("transform: resize to 160x160 px: shorter side to 168, centre crop (bicubic), RGB, normalise mean "
            "[0.5, 0.5, 0.5] std [0.5, 0.5, 0.5] (request; timm pretrained_cfg)") in err, err
    assert preprocessing.resolved(model)["crop_pct"] == pytest.approx(0.95)
