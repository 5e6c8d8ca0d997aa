"""Uploads against a real ``python -m gigaudit_server serve`` process: bombs and huge headers leave its peak RSS
within 256 MB of idle, header parsing is linear, stalled streams never starve health checks, idle ones end."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
import zlib
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from gigaudit.v1 import dataset_service_pb2 as dataset_pb
from gigaudit.v1 import dataset_service_pb2_grpc as dataset_grpc
from gigaudit.v1 import model_service_pb2 as model_pb
from gigaudit.v1 import model_service_pb2_grpc as model_grpc

REPO = Path(__file__).resolve().parents[2]
MiB = 1024**2
RSS_GROWTH_LIMIT = 256 * 10**6


class Api:
    """``python -m gigaudit_server serve`` (no auth) on a free port, with its /proc memory figures."""

    def __init__(self, redis_url: str, store: str, log: Path, *flags: str):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "service"), str(REPO / "client")]),
               "OMP_NUM_THREADS": "1"}
        self._log = open(log, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gigaudit_server", "serve", "--redis-url", redis_url, "--store", store,
             "--port", "0", "--log-level", "WARNING", *flags],
            stdout=subprocess.PIPE, stderr=self._log, env=env, text=True)
        line = self.process.stdout.readline()
        assert "listening on" in line, log.read_text()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{int(line.rsplit(':', 1)[1])}",
                                             options=[("grpc.max_send_message_length", 8 * MiB)])
        self.datasets = dataset_grpc.DatasetServiceStub(self.channel)
        self.models = model_grpc.ModelServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def status(self, field: str) -> int:
        """``VmRSS`` or ``VmHWM`` in bytes."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(field)

    def reset_peak(self) -> None:
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS

    def stop(self) -> int | None:
        self.channel.close()
        died = self.process.poll()
        self.process.terminate()
        self.process.wait(30)
        self._log.close()
        return died


@pytest.fixture
def start_api(redis_client, redis_url, tmp_path):
    started = []

    def start(*flags: str) -> Api:
        started.append(Api(redis_url, f"file://{tmp_path}/store", tmp_path / f"api-{len(started)}.log", *flags))
        return started[-1]

    yield start
    for api in started:
        assert api.stop() is None, "the API process died"


def dataset_requests(dataset_id: str, data: bytes, chunk: int = MiB):
    header = dataset_pb.UploadDatasetHeader(dataset_id=dataset_id, dataset=dataset_pb.Dataset(
        size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest()))
    yield dataset_pb.UploadDatasetRequest(header=header)
    for start in range(0, len(data), chunk):
        yield dataset_pb.UploadDatasetRequest(chunk=data[start:start + chunk])


def model_requests(model_id: str, data: bytes, chunk: int):
    header = model_pb.UploadModelHeader(model_id=model_id, model=model_pb.Model(
        architecture="partsnet", num_classes=6, input_size=32, mean=[0.0] * 3, std=[1.0] * 3, size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest()))
    yield model_pb.UploadModelRequest(header=header)
    for start in range(0, len(data), chunk):
        yield model_pb.UploadModelRequest(chunk=data[start:start + chunk])


def code_of(call) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


# ---------------------------------------------------------------------------------------------- the uploads
def png(side: int, seed: int = 0) -> bytes:
    out = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(out, format="PNG", compress_level=0)
    return out.getvalue()


def tar_member(name: str, data: bytes) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info.tobuf(format=tarfile.GNU_FORMAT) + data + bytes(-len(data) % 512)


def gzip_bomb() -> bytes:
    """~1 MB of tar.gz: 1 GiB of hidden zeros the server must decompress through, then an image declaring 3 GiB."""
    info = tarfile.TarInfo(".padding")
    info.size = 1024**3
    block = gzip.compress(bytes(64 * MiB), mtime=0)
    bomb = tarfile.TarInfo("cat/bomb.png")
    bomb.size = 3 * 1024**3
    return (gzip.compress(tar_member("cat/ok.png", png(8)) + info.tobuf(format=tarfile.GNU_FORMAT), mtime=0)
            + block * 16 + gzip.compress(bomb.tobuf(format=tarfile.GNU_FORMAT), mtime=0) + block * 4)


def zip_bomb() -> bytes:
    """A zip whose second member declares 1 kB but holds 1 GiB of deflated zeros (a lying size), after a valid
    60 MB image the server reads whole."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("cat/big.png", png(8) + bytes(60 * 10**6))
        with archive.open("cat/lying.png", "w") as member:
            for _ in range(16):
                member.write(bytes(64 * MiB))
    data = bytearray(out.getvalue())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        lying = archive.getinfo("cat/lying.png")
    declared = struct.pack("<I", 1000)
    data[lying.header_offset + 22:lying.header_offset + 26] = declared
    directory = bytes(data).rindex(b"PK\x01\x02")
    data[directory + 24:directory + 28] = declared
    return bytes(data)


def png_bomb() -> bytes:
    """A tar.gz holding a ~150 kB PNG that declares 12000 x 12000 grey pixels (144 MB decoded)."""
    side = 12000
    raw = zlib.compressobj(9)
    row = bytes(side + 1)
    idat = b"".join(raw.compress(row) for _ in range(side)) + raw.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    image = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
             + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return gzip.compress(tar_member("cat/ok.png", png(8)) + tar_member("cat/bomb.png", image) + bytes(1024),
                         mtime=0)


def safetensors_header(header_bytes: int = 32 * MiB, tensors: int = 80_000) -> bytes:
    """A safetensors file whose 32 MiB header lists ``tensors`` entries (the last one's offsets are off) and
    spaces; no data section."""
    table = {f"layer{i}.weight": {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]}
             for i in range(tensors)}
    table[f"layer{tensors - 1}.weight"]["data_offsets"] = [0, 8]
    text = json.dumps(table, separators=(",", ":")).encode()
    text += b" " * (header_bytes - len(text))
    data = bytes(4 * tensors)
    return struct.pack("<Q", len(text)) + text + data


def normal_dataset(total: int = 50 * MiB) -> bytes:
    side = 512
    count = total // (side * side * 3) + 1
    return b"".join(tar_member(f"class{i % 5}/{i}.png", png(side, i)) for i in range(count)) + bytes(1024)


# ---------------------------------------------------------------------------------------------- the tests
@pytest.mark.slow
def test_peak_rss_stays_within_256_mb_of_idle_during_any_upload(start_api):
    api = start_api()
    warm = tar_member("cat/1.png", png(8)) + bytes(1024)  # imports PIL, opens the store: idle means warm
    assert api.datasets.UploadDataset(dataset_requests("warm", warm)).image_count == 1
    time.sleep(0.5)
    idle = api.status("VmRSS")
    cases = {
        "gzip bomb": (lambda: api.datasets.UploadDataset(dataset_requests("gz", gzip_bomb())),
                      grpc.StatusCode.INVALID_ARGUMENT, "'cat/bomb.png' declares 3221225472 bytes"),
        "zip bomb": (lambda: api.datasets.UploadDataset(dataset_requests("zip", zip_bomb())),
                     grpc.StatusCode.INVALID_ARGUMENT, "zip archive is truncated or corrupt at member 'cat/lying.png'"),
        "png bomb": (lambda: api.datasets.UploadDataset(dataset_requests("png", png_bomb())),
                     grpc.StatusCode.INVALID_ARGUMENT, "'cat/bomb.png' declares 12000x12000 pixels"),
        "32 MiB header": (lambda: api.models.UploadModel(model_requests("header", safetensors_header(), 16 * 1024)),
                          grpc.StatusCode.INVALID_ARGUMENT, "inconsistent data offsets"),
        "50 MB dataset": (lambda: api.datasets.UploadDataset(dataset_requests("normal", normal_dataset())),
                          grpc.StatusCode.OK, ""),
    }
    growth = {}
    for name, (call, code, message) in cases.items():
        api.reset_peak()
        got, details = code_of(call)
        growth[name] = api.status("VmHWM") - idle
        assert (got, message in details) == (code, True), f"{name}: {got} {details}"
    print({name: f"{bytes_ / 1e6:.0f} MB" for name, bytes_ in growth.items()}, f"idle {idle / 1e6:.0f} MB")
    assert max(growth.values()) <= RSS_GROWTH_LIMIT, growth


@pytest.mark.slow
def test_header_parsing_is_linear_in_its_size(start_api):
    api = start_api()
    data = safetensors_header()
    seconds = {}
    for chunk in (MiB, 16 * 1024, MiB, 16 * 1024):  # each twice, the best of two
        start = time.perf_counter()
        got, details = code_of(lambda: api.models.UploadModel(model_requests("linear", data, chunk)))
        assert got == grpc.StatusCode.INVALID_ARGUMENT and "inconsistent data offsets" in details, details
        seconds[chunk] = min(seconds.get(chunk, float("inf")), time.perf_counter() - start)
    print({f"{chunk // 1024} KiB chunks": f"{s:.2f} s" for chunk, s in seconds.items()})
    assert seconds[16 * 1024] < 4 * seconds[MiB] + 0.5, seconds  # quadratic buffering took 55x


def stalled_upload(api: Api, release: threading.Event, outcome: list):
    """An upload that sends its header, then nothing until ``release``; its status lands in ``outcome``."""
    def requests():
        yield dataset_pb.UploadDatasetRequest(header=dataset_pb.UploadDatasetHeader(
            dataset_id="stalled", dataset=dataset_pb.Dataset(size_bytes=10, sha256="0" * 64)))
        release.wait(60)

    def run():
        outcome.append(code_of(lambda: api.datasets.UploadDataset(requests(), timeout=60)))
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_stalled_uploads_never_starve_health_checks(start_api):
    api = start_api("--max-workers", "4")  # at most 2 upload streams
    release, outcomes = threading.Event(), []
    threads = [stalled_upload(api, release, outcomes) for _ in range(6)]
    try:
        time.sleep(1.0)
        for _ in range(5):
            start = time.monotonic()
            api.health.Check(health_pb2.HealthCheckRequest(), timeout=2)
            assert time.monotonic() - start < 1.0
            api.datasets.ListDatasets(dataset_pb.ListDatasetsRequest(), timeout=2)
        refused = [o for o in outcomes if o[0] == grpc.StatusCode.RESOURCE_EXHAUSTED]
        assert len(refused) == 4 and "2 uploads are in progress" in refused[0][1], outcomes
    finally:
        release.set()
        for thread in threads:
            thread.join(30)


def test_an_idle_stream_is_ended_after_the_idle_timeout_and_frees_its_slot(start_api):
    api = start_api("--max-workers", "2", "--stream-idle-timeout-s", "1.5")  # one upload stream at a time
    release, outcome = threading.Event(), []
    start = time.monotonic()
    stalled_upload(api, release, outcome).join(20)
    elapsed = time.monotonic() - start
    release.set()
    assert outcome and outcome[0][0] == grpc.StatusCode.DEADLINE_EXCEEDED, outcome
    assert "no upload message arrived for 1.5 s" in outcome[0][1]
    assert 1.4 < elapsed < 5, elapsed
    data = tar_member("cat/1.png", png(8)) + bytes(1024)
    assert api.datasets.UploadDataset(dataset_requests("after", data), timeout=10).image_count == 1


def test_bad_archives_get_a_clear_status_and_are_never_registered(start_api):
    import bad_inputs

    api = start_api()
    cases = {**{name: build() for name, build in bad_inputs.BAD_ARCHIVES.items()},
             "non-utf8-class": bad_inputs.non_utf8_class_tar(), "non-utf8-class-gz": bad_inputs.non_utf8_class_tar(True)}
    for name, data in cases.items():
        got, details = code_of(lambda: api.datasets.UploadDataset(dataset_requests(name, data), timeout=20))
        assert got == grpc.StatusCode.INVALID_ARGUMENT, (name, got, details)
        assert ("truncated or corrupt" if "utf8" not in name else r"'\udcff/1.png' has a name that is not valid UTF-8") \
            in details, (name, details)
        got, _ = code_of(lambda: api.datasets.GetDataset(dataset_pb.GetDatasetRequest(name=f"datasets/{name}")))
        assert got == grpc.StatusCode.NOT_FOUND, name
    assert not api.datasets.ListDatasets(dataset_pb.ListDatasetsRequest()).datasets
