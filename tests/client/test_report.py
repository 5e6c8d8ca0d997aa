import json
import re
import shutil
import subprocess
import time

import pytest
from graph_factory import exemplars_for, full_evidence, random_graph
from PIL import Image, ImageStat

from gigaudit.policy import evaluate_policy
from gigaudit.report import build_report, write_report
from gigaudit.results import ConceptGraph

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless chromium not installed (apt-get install chromium)")


def payload(html: str) -> dict:
    text = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S).group(1)
    return json.loads(text)


def chromium(args: list[str], url: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr",
                           "--v=0", *args, url], capture_output=True, text=True, timeout=120)


def test_report_is_self_contained(graph):
    html = build_report(graph, exemplars=exemplars_for(graph))
    assert not re.search(r'(src|href)\s*=\s*"(?!data:)[a-z]+:', html)  # only data: URIs
    assert not re.search(r"url\(|@import|<link", html)
    assert "default-src 'none'" in html  # CSP: the browser itself refuses any fetch
    data = payload(html)
    assert len(data["nodes"]) == len(graph["nodes"]) and len(data["edges"]) == len(graph["edges"])
    shots = [ex for shots in data["gallery"].values() for ex in shots]
    assert len(data["gallery"]) == 12 and len(shots) == 12 * 2
    assert all(ex["src"].startswith("data:image/webp;base64,") and ex["ierf"].startswith("data:image/webp;base64,")
               for ex in shots)
    assert data["budget"]["left_out"] == [] and 'id="budget-notice"' not in html
    assert set(data["circuits"]) == {"logits:0", "logits:1", "logits:2"}


def test_names_cannot_inject_markup(graph):
    graph["classes"][0] = graph["nodes"][-3]["name"] = "</script><script>alert(1)</script>"
    html = build_report(graph, title="<b>t</b>")
    assert "<script>alert(1)" not in html and "<b>t</b>" not in html
    assert payload(html)["circuits"]["logits:0"]["label"] == graph["classes"][0]


def test_evidence_tables_and_curves(graph):
    policy = evaluate_policy({"evidence": {"max_completeness_delta": 0.005}}, graph)
    html = build_report(graph, policy=policy)
    assert "Policy “default”: FAILED" in html
    # deletion and insertion: 3 orders for one pair, 2 for the other; delta vs steps: mean and max
    assert html.count("<polyline") == 2 * 3 + 2 * 2 + 2
    assert "features.1-&gt;logits" in html and "stability.matched_cosine" in html
    assert "The graph carries no evidence" in build_report({**graph, "evidence": {}})


def test_bad_controls_are_refused(graph):
    with pytest.raises(ValueError, match="top_k"):
        build_report(graph, top_k=0)


@needs_chromium
def test_report_renders_in_headless_chromium(graph, tmp_path):
    policy = evaluate_policy({"concentration": {"max_share": 0.9}}, graph)
    path = write_report(tmp_path, graph, exemplars=exemplars_for(graph), policy=policy, nodes_per_layer=4)
    url = path.as_uri() + "#circuit=logits:1&select=features.0:2"
    dom = chromium(["--dump-dom"], url)
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []
    assert 'id="errors" hidden' in dom.stdout
    # the 4 most relevant concepts per layer, the circuit, the selected concept and the 3 classes
    data = payload(path.read_text())
    expected = set(data["circuits"]["logits:1"]["nodes"]) | {"features.0:2"}
    for layer in data["columns"]:
        ranked = sorted((n for n in data["nodes"] if n["layer"] == layer), key=lambda n: -n["relevance"])
        expected |= {n["id"] for n in (ranked if layer == "logits" else ranked[:4])}
    rendered = re.search(r'data-rendered="(\d+) nodes, (\d+) edges"', dom.stdout)
    assert rendered and int(rendered.group(1)) == len(expected) and int(rendered.group(2)) > 0
    assert dom.stdout.count('class="exemplar"') == 2  # the selected concept's gallery
    assert dom.stdout.count('class="ierf"') == 2 and 'id="gallery-missing" class="hint" hidden' in dom.stdout
    shot = tmp_path / "shot.png"
    chromium([f"--screenshot={shot}", "--window-size=1200,900"], url)
    img = Image.open(shot).convert("RGB")
    graph_area = img.crop((0, 280, 900, 700))
    assert max(ImageStat.Stat(graph_area).var) > 500  # thumbnails and edges, not a blank page


@needs_chromium
@pytest.mark.slow
def test_hundreds_of_concepts_stay_readable(tmp_path):
    big = random_graph(n_layers=3, k=200, n_classes=10, seed=3, evidence=full_evidence())
    start = time.perf_counter()
    path = write_report(tmp_path, big, exemplars=exemplars_for(big, per_node=2), top_k=2, nodes_per_layer=10)
    build_s = time.perf_counter() - start
    dom = chromium(["--dump-dom"], path.as_uri() + "#circuit=logits:3")
    assert [line for line in dom.stderr.splitlines() if ":CONSOLE" in line] == []
    nodes, edges = map(int, re.search(r'data-rendered="(\d+) nodes, (\d+) edges"', dom.stdout).groups())
    assert 40 <= nodes <= 40 + len(payload(path.read_text())["circuits"]["logits:3"]["nodes"])
    assert edges <= 2 * nodes
    assert build_s < 20, f"building the report took {build_s:.1f} s"


def test_evidence_is_shown_in_forward_layer_order(graph):
    graph["evidence"]["completeness"] = dict(reversed(list(graph["evidence"]["completeness"].items())))
    html = build_report(graph)
    assert html.index("<td>features.0-&gt;features.1</td>") < html.index("<td>features.1-&gt;logits</td>")


@needs_chromium
@pytest.mark.slow
def test_controls_prune_search_and_collapse(graph, tmp_path):
    path = write_report(tmp_path, graph, nodes_per_layer=2, top_k=1)

    def rendered(fragment: str) -> tuple[int, int, int]:
        dom = chromium(["--dump-dom"], path.as_uri() + "#" + fragment)
        assert [line for line in dom.stderr.splitlines() if ":CONSOLE" in line] == []
        nodes, edges = re.search(r'data-rendered="(\d+) nodes, (\d+) edges"', dom.stdout).groups()
        return int(nodes), int(edges), int(re.search(r'data-found="(\d+)"', dom.stdout).group(1))

    base = rendered("")
    assert base[0] == 2 + 2 + 2 and base[1] <= base[0] and base[2] == 0  # classes are limited too
    assert rendered("topk=3")[1] > base[1]  # more edges per target
    assert rendered("nodes=6")[0] == 6 + 6 + 3
    assert rendered("search=features.1:")[0::2] == (2 + 6 + 2, 6)
    assert rendered("collapse=features.0,logits")[0] == 2


def test_large_graphs_carry_only_the_strongest_edges(graph):
    data = payload(build_report(graph, max_edges=1, max_circuits=1))
    circuit_edges = {tuple(e) for e in data["circuits"]["logits:0"]["edges"]}
    assert list(data["circuits"]) == ["logits:0"] and data["n_edges"] == len(graph["edges"])
    kept = {(e[0], e[1]) for e in data["edges"]}
    strongest = {(e["source"], e["target"]) for e in ConceptGraph(graph).prune(1)}
    assert kept == strongest | circuit_edges and len(kept) < len(graph["edges"])
    assert data["controls"]["top_k"] == 1
