"""The worker entry point's argument checks (the process itself runs in test_tasks)."""
import pytest
import torch

from gigaudit_server.worker.main import check_device, parse_args


def test_devices():
    assert check_device("cpu") == "cpu"
    for bad in ("tpu", "cuda", "gpu:0", "cuda:x"):
        with pytest.raises(ValueError, match="use cpu or cuda:N"):
            check_device(bad)
    missing = f"cuda:{torch.cuda.device_count()}"
    with pytest.raises(ValueError, match=f"no {missing}: this machine has"):
        check_device(missing)


def test_arguments(capsys):
    args = parse_args(["--redis-url", "redis://h:1/0", "--store", "file:///s", "--threads", "2"])
    assert (args.device, args.redis_url, args.store, args.threads, args.models) == ("cpu", "redis://h:1/0",
                                                                                   "file:///s", 2, 4)
    with pytest.raises(SystemExit):
        parse_args(["--store", "file:///s"])  # no Redis URL
    with pytest.raises(SystemExit):
        parse_args(["--redis-url", "redis://h", "--store", "file:///s", "--device", "cuda:99"])
    assert "no cuda:99" in capsys.readouterr().err
