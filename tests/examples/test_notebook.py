"""examples/audit_timm.ipynb runs as a notebook would: its code cells in order, in one namespace, no server."""
import json
import time
from pathlib import Path

import pytest

from gigaudit.report import report_data

pytest.importorskip("timm")

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "audit_timm.ipynb"
TIME_LIMIT_S = 120


def _notebook() -> dict:
    return json.loads(NOTEBOOK.read_text(encoding="utf-8"))


def test_the_notebook_is_nbformat_4_without_outputs():
    nb = _notebook()
    assert nb["nbformat"] == 4 and nb["metadata"]["kernelspec"]["language"] == "python"
    assert {c["cell_type"] for c in nb["cells"]} == {"markdown", "code"}
    for cell in nb["cells"]:
        assert isinstance(cell["source"], list) and all(isinstance(line, str) for line in cell["source"])
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
    assert len({c["id"] for c in nb["cells"]}) == len(nb["cells"])


@pytest.mark.timeout(2 * TIME_LIMIT_S)
def test_the_notebook_audits_a_timm_model_and_writes_the_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    start = time.perf_counter()
    for i, cell in enumerate(c for c in _notebook()["cells"] if c["cell_type"] == "code"):
        exec(compile("".join(cell["source"]), f"{NOTEBOOK.name}[code cell {i}]", "exec"), namespace)
    seconds = time.perf_counter() - start
    assert seconds < TIME_LIMIT_S, f"the notebook took {seconds:.0f} s"

    report = tmp_path / "audit_report" / "index.html"
    assert namespace["report"] == Path("audit_report") / "index.html" and report.is_file()
    data = report_data(report.read_text(encoding="utf-8"))
    circuit = namespace["circuit"]["nodes"]
    assert circuit[-1] == "logits:0" and {n["id"] for n in data["nodes"]} >= set(circuit)
    shown = [nid for nid in circuit if data["gallery"].get(nid)]
    assert len(shown) >= len(circuit) - 1  # every circuit concept has its exemplars (the logits have none)
    ns = namespace
    assert ns["accuracy"](ns["model"], ns["audit_inputs"], ns["audit_labels"]) > 0.8  # it learnt the parts
    assert namespace["layers"] == ["layer1.0", "layer2.0", "layer3.0", "layer4.0"]
    assert "timm pretrained_cfg" in namespace["prep"].source and namespace["prep"].size == (64, 64)


def test_the_docs_page_shows_the_notebooks_code():
    page = (NOTEBOOK.parents[1] / "docs" / "notebook.md").read_text(encoding="utf-8")
    blocks = [block.strip() for block in page.split("```python\n")[1:]]
    blocks = [block[:block.index("```")].strip() for block in blocks]
    cells = ["".join(c["source"]).strip() for c in _notebook()["cells"] if c["cell_type"] == "code"]
    assert blocks == cells
