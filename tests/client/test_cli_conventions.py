"""CLI conventions that need no server: -o formats, contexts, did-you-mean, errors once, weights that fit another
architecture, preprocessing defaults, completion, --version, and an unreachable server reported in time."""
import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
import yaml
from google.longrunning import operations_pb2
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from gigaudit import contexts, preprocessing
from gigaudit.cli import main
from gigaudit.commands.completion import script
from gigaudit.errors import GigauditError
from gigaudit.output import plain, render
from gigaudit.suggest import cap_lists, closest
from gigaudit.v1 import dataset_service_pb2 as dataset_pb
from gigaudit.v1 import model_service_pb2 as model_pb
from gigaudit.v1 import operation_metadata_pb2 as metadata_pb
from gigaudit.weights import check_fit, matching_architectures, read_header

ROOT = Path(__file__).resolve().parents[2]
PARTSNET = ROOT / "service" / "gig" / "assets" / "partsnet.safetensors"


@pytest.fixture
def config_file(tmp_path, monkeypatch):
    path = tmp_path / "cfg" / "config.yaml"
    monkeypatch.setenv("GIGAUDIT_CONFIG", str(path))
    for name in ("GIGAUDIT_SERVER", "GIGAUDIT_TOKEN", "GIGAUDIT_TLS_CA", "GIGAUDIT_TLS", "GIGAUDIT_CONTEXT"):
        monkeypatch.delenv(name, raising=False)
    return path


def _operation(total: int) -> operations_pb2.Operation:
    meta = metadata_pb.OperationMetadata(kind="audit", state=metadata_pb.OPERATION_STATE_RUNNING, stage="graph",
                                         done=3, total=total)
    op = operations_pb2.Operation(name="operations/abc")
    op.metadata.Pack(meta)
    return op


def test_json_and_yaml_keep_numbers_numbers_and_enums_short(capsys):
    op = _operation(total=40)
    row = plain(op)
    assert row["metadata"]["total"] == 40 and row["metadata"]["state"] == "RUNNING"  # not "40", not OPERATION_STATE_
    assert row["metadata"]["@type"] == "gigaudit.v1.OperationMetadata"
    render([op], "json")
    assert json.loads(capsys.readouterr().out)[0]["metadata"]["done"] == 3
    render(model_pb.Model(name="models/m", num_classes=10, size_bytes=5 << 30), "yaml")
    assert yaml.safe_load(capsys.readouterr().out) == {"name": "models/m", "num_classes": 10, "size_bytes": 5 << 30}


def test_table_has_aligned_columns_per_kind(capsys):
    render([_operation(40), _operation(7)], "table")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "STATE", "STAGE", "PROGRESS", "TARGET", "AGE"]
    assert lines[1].split()[:5] == ["operations/abc", "audit", "RUNNING", "graph", "3/40"]
    assert lines[0].index("PROGRESS") == lines[1].index("3/40")
    render([model_pb.Architecture(name="resnet18", description="ResNet-18 (torchvision)")], "table")
    assert capsys.readouterr().out.splitlines()[1].split(None, 1) == ["resnet18", "ResNet-18 (torchvision)"]


def test_contexts_set_use_and_override(config_file, monkeypatch, capsys):
    assert main(["config", "set-context", "prod", "--server", "prod:443", "--token", "s3cr3t", "--tls"]) == 0
    assert main(["config", "set-context", "local", "--server", "127.0.0.1:50051"]) == 0
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600  # it holds tokens
    conn = contexts.resolve()
    assert (conn.server, conn.token, conn.tls, conn.source) == ("prod:443", "s3cr3t", True, "context prod")
    assert main(["config", "use-context", "local"]) == 0
    assert contexts.resolve().server == "127.0.0.1:50051" and contexts.resolve().tls is None
    monkeypatch.setenv("GIGAUDIT_SERVER", "env:1")
    assert contexts.resolve().server == "env:1" and contexts.resolve("flag:2").server == "flag:2"
    assert contexts.resolve(context="prod").token == "s3cr3t"
    capsys.readouterr()
    assert main(["config", "get-contexts", "-o", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["current"], r["token"]) for r in rows] == [("local", True, ""), ("prod", False, "set")]
    assert "s3cr3t" not in json.dumps(rows)
    assert main(["config", "use-context", "nope"]) == 2
    assert "no context 'nope'" in capsys.readouterr().err


def test_no_server_anywhere_is_a_clear_error(config_file, capsys):
    assert main(["models", "list"]) == 2
    assert "gigaudit config set-context" in capsys.readouterr().err


def test_unreachable_server_is_reported_within_the_connect_timeout(config_file, capsys):
    with socket.socket() as silent:  # accepts TCP (the kernel does) but never speaks HTTP/2
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        start = time.monotonic()
        assert main(["models", "list", "--server", f"127.0.0.1:{port}", "--connect-timeout", "1"]) == 2
        assert time.monotonic() - start < 2.5
    err = capsys.readouterr().err
    assert "UNAVAILABLE" in err and "within 1 s" in err and err.count("\n") == 1
    start = time.monotonic()
    assert main(["models", "list", "--server", "127.0.0.1:1"]) == 2  # refused: at once, not after 5 s
    assert time.monotonic() - start < 2.0


def test_errors_are_printed_once_and_lists_capped():
    violation = error_details_pb2.PreconditionFailure(violations=[error_details_pb2.PreconditionFailure.Violation(
        type="STATE", subject="operations/x", description="the operation is RUNNING; cancel it first")])
    info = error_details_pb2.ErrorInfo(reason="FAILED_PRECONDITION", domain="gigaudit",
                                       metadata={"subject": "operations/x"})
    details = []
    for d in (violation, info):
        details.append(any_pb2.Any())
        details[-1].Pack(d)
    error = GigauditError.from_status(status_pb2.Status(
        code=9, message="operations/x: the operation is RUNNING; cancel it first", details=details))
    assert error.one_line() == "FAILED_PRECONDITION: operations/x: the operation is RUNNING; cancel it first"
    keys = ", ".join(f"layer{i}.weight" for i in range(300))
    long = GigauditError(grpc.StatusCode.INVALID_ARGUMENT, f"weights do not match: missing keys: {keys}")
    assert len(long.one_line()) < 300 and "(+292 more)" in long.one_line()


def test_did_you_mean():
    names = ["resnet18", "resnet34", "resnet50", "resnext50_32x4d", "vgg16", "vit_b_16", "partsnet"]
    assert closest("resnt18", names)[0] == "resnet18" and closest("parstnet", names) == ["partsnet"]
    assert closest("xyzzy", names) == []
    text = cap_lists("valid architectures are: " + ", ".join(names * 10))
    assert text.count(",") <= 9 and "(+62 more)" in text


def test_weights_that_fit_another_architecture_are_named():
    shapes = read_header(PARTSNET)
    assert [m.architecture for m in matching_architectures(shapes)] == ["partsnet"]
    assert check_fit(PARTSNET, "partsnet", 6) is None
    assert "look like partsnet (6 classes)" in check_fit(PARTSNET, "resnet18", 6)
    assert "with 6 classes, not --num-classes 10" in check_fit(PARTSNET, "partsnet", 10)
    assert check_fit(PARTSNET, "not-in-the-table", 6) is None  # a newer server's architecture: its check decides


def test_audit_refuses_weights_of_another_architecture_before_uploading(tmp_path, capsys, monkeypatch):
    from gigaudit import cli

    monkeypatch.setattr(cli, "_register_model", lambda *a: pytest.fail("uploaded"))
    args = cli._parser().parse_args(["audit", "--model", str(PARTSNET), "--arch", "resnet18", "--num-classes", "6",
                                     "--dataset", str(tmp_path), "--out", str(tmp_path / "o")])
    with pytest.raises(ValueError, match="look like partsnet"):
        cli._check_weights(args)


def _dataset(min_side: int, median: int, classes=()) -> dataset_pb.Dataset:
    return dataset_pb.Dataset(class_names=list(classes), image_sizes=dataset_pb.ImageSizes(
        min_height=min_side, max_height=median * 2, median_height=median, min_width=min_side, max_width=median * 2,
        median_width=median))


def test_input_size_fits_the_data_and_upsampling_is_warned(tmp_path):
    chosen = preprocessing.choose(None, PARTSNET, _dataset(90, 96), None, None)
    assert chosen.side == 96 and "median image size" in chosen.describe()
    assert chosen.mean == preprocessing.IMAGENET_MEAN and "ImageNet's" in chosen.describe()
    assert preprocessing.upsampling_warning(chosen, _dataset(96, 96)) is None
    flag = preprocessing.choose(224, PARTSNET, _dataset(90, 96), [0, 0, 0], [1, 1, 1])
    assert flag.side == 224 and flag.source == "--input-size"
    warning = preprocessing.upsampling_warning(flag, _dataset(90, 96))
    assert "most images are smaller than 224 px" in warning and "--input-size 96" in warning
    assert preprocessing.choose(None, PARTSNET, dataset_pb.Dataset(), None, None).side == 224  # no sizes known
    header = json.dumps({"__metadata__": {"input_size": "64"}}).encode()
    own = tmp_path / "own.safetensors"
    own.write_bytes(len(header).to_bytes(8, "little") + header)
    assert preprocessing.choose(None, own, _dataset(90, 96), None, None).side == 64  # the model's configuration


def test_class_names_come_from_the_dataset_folders(tmp_path, capsys):
    from gigaudit import cli

    args = cli._parser().parse_args(["audit", "--model", str(PARTSNET), "--arch", "partsnet", "--num-classes", "2",
                                     "--dataset", str(tmp_path), "--out", str(tmp_path / "o")])
    cli._choose_preprocessing(args, _dataset(32, 32, classes=["cat", "dog"]))
    assert args.class_names == ["cat", "dog"] and args.input_size == 32
    err = capsys.readouterr().err
    assert "transform: resize to 32x32 px" in err and "class names from the dataset's folders: cat, dog" in err


def test_evaluation_scope_from_flags_over_the_policy(tmp_path):
    from gigaudit import cli
    from gigaudit.policy import load_policy

    policy = load_policy({"evaluation": {"images": 64, "metrics": ["default", "sanity"]}})
    args = cli._parser().parse_args(["audit", "--model", "m", "--arch", "a", "--num-classes", "2", "--dataset", "d",
                                     "--out", "o"])
    cli._evaluation_scope(args, policy)
    assert args.evaluation_images == 64 and args.metrics[-1] == "sanity" and "completeness" in args.metrics
    args = cli._parser().parse_args(["audit", "--model", "m", "--arch", "a", "--num-classes", "2", "--dataset", "d",
                                     "--out", "o", "--evaluation-images", "8", "--metrics", "stability"])
    cli._evaluation_scope(args, policy)
    assert (args.evaluation_images, args.metrics) == (8, ["stability"])
    base = cli._digest(cli._audit_options(args, "models/m", "datasets/d"))
    args.metrics = ["sanity"]
    assert cli._digest(cli._audit_options(args, "models/m", "datasets/d")) != base
    with pytest.raises(ValueError, match="did you mean stability"):
        cli._evaluation_scope(cli._parser().parse_args(
            ["audit", "--model", "m", "--arch", "a", "--num-classes", "2", "--dataset", "d", "--out", "o",
             "--metrics", "stabilty"]), None)


def test_version_and_help_show_defaults(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("gigaudit ")
    with pytest.raises(SystemExit):
        main(["audit", "--help"])
    help_ = " ".join(capsys.readouterr().out.split())
    assert "(default: 6)" in help_ and "(default: 5.0)" in help_ and "(default: the dataset's class folders)" in help_


@pytest.mark.parametrize("words, expected", [
    ("gigaudit mod", {"models"}),
    ("gigaudit models ", {"list", "get", "layers", "delete"}),
    ("gigaudit operations delete x --f", {"--force"}),
    ("gigaudit models list -o ", {"table", "json", "yaml"}),
    ("gigaudit completion ", {"bash", "zsh"}),
])
def test_bash_completion(words, expected, tmp_path):
    from gigaudit.cli import _parser

    (tmp_path / "c.sh").write_text(script(_parser(), "bash"))
    parts = words.split(" ")
    program = (f"source {tmp_path / 'c.sh'}; COMP_WORDS=({' '.join(repr(p) for p in parts)}); "
               f"COMP_CWORD={len(parts) - 1}; _gigaudit_complete; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    got = set(done.stdout.split())
    assert expected <= got and (len(got) == len(expected) or parts[-1] == ""), got


def test_zsh_completion_script_is_bash_compatible():
    from gigaudit.cli import _parser

    text = script(_parser(), "zsh")
    assert text.startswith("autoload -U +X bashcompinit") and "complete -o default -F _gigaudit_complete" in text
    done = subprocess.run(["bash", "-n"], input=script(_parser(), "bash"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_weight_fingerprints_are_current():
    pytest.importorskip("torch")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_weight_fingerprints.py"), "--check"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
