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


def test_resilience_and_lifecycle_flags(capsys):
    base = ["--redis-url", "redis://h:1/0", "--store", "file:///s"]
    args = parse_args(base)
    assert (args.redis_retry_s, args.checkpoint_s, args.stall_timeout_s, args.heartbeat_s) == (60.0, 30.0, 1800.0,
                                                                                              10.0)
    assert (args.finished_ttl_s, args.dead_letter_ttl_s) == (7 * 86400.0, 30 * 86400.0)
    args = parse_args([*base, "--redis-retry-s", "5", "--checkpoint-s", "0", "--stall-timeout-s", "0",
                       "--heartbeat-s", "2", "--max-attempts", "5", "--finished-ttl-s", "60"])
    assert (args.redis_retry_s, args.checkpoint_s, args.stall_timeout_s, args.heartbeat_s, args.max_attempts,
            args.finished_ttl_s) == (5.0, 0.0, 0.0, 2.0, 5, 60.0)
    for bad in (["--checkpoint-s", "-1"], ["--heartbeat-s", "0"], ["--redis-retry-s", "nan"], ["--max-attempts", "0"]):
        with pytest.raises(SystemExit):
            parse_args([*base, *bad])
    assert "--checkpoint-s must be" in capsys.readouterr().err
