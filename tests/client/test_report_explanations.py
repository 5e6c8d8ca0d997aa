"""Image explanations in the report and the CLI's text: the section, escaping, the size budget, bad dicts."""
import io

import pytest
from PIL import Image

from gigaudit.explanations import table, to_json_ready, write_overlays
from gigaudit.report import build_report, report_data
from graph_factory import random_graph


def webp(colour=(200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(out, format="WEBP")
    return out.getvalue()


def explanation(image="cat <1>.png") -> dict:
    contributions = [{"node_id": "L1:2", "concept": 2, "label": "<b>stripes</b>", "attribution": 0.75,
                      "coefficient": 1.5, "ierf_overlay": webp()},
                     {"node_id": "L1:0", "concept": 0, "label": None, "attribution": -0.25, "coefficient": 0.5,
                      "ierf_overlay": b""}]
    return {"graph": "models/m/conceptGraphs/g", "image": image, "predicted_class": 1, "predicted_label": "c1",
            "target_class": 1, "target_label": "c1", "probabilities": [0.2, 0.7, 0.1],
            "completeness": {"L1->logits": {"attribution_sum": 0.5, "target_difference": 0.5, "relative": 1e-7}},
            "layers": [{"source": "L1", "target": "logits", "contributions": contributions}]}


def test_the_report_shows_each_explanation_with_its_overlays_escaped():
    graph = random_graph()
    html = build_report(graph, explanations=[explanation(), explanation("dog.png")])
    assert html.count('<article class="explanation">') == 2
    assert "cat &lt;1&gt;.png: predicted c1 (1) (p = 0.700), explaining c1 (1)" in html
    assert "&lt;b&gt;stripes&lt;/b&gt;" in html and "<b>stripes</b>" not in html  # labels come from probe folders
    assert html.count('src="data:image/webp;base64,') == 2  # one per explanation; the empty overlay shows "–"
    assert "relative error 1e-07" in html and report_data(html)["nodes"]
    assert '<section id="explanations">' not in build_report(graph)


def test_explanations_count_towards_the_budget():
    graph = random_graph()
    plain = len(build_report(graph, max_bytes=0).encode())
    with_one = len(build_report(graph, explanations=[explanation()], max_bytes=0).encode())
    assert with_one > plain + len(webp())


def test_a_malformed_explanation_is_refused():
    broken = explanation()
    del broken["layers"]
    with pytest.raises(ValueError, match=r"explanations\[1\] is not an explanation dict.*'layers'"):
        build_report(random_graph(), explanations=[explanation(), broken])


def test_text_json_and_files(tmp_path):
    e = explanation()
    text = table(e)
    assert text.splitlines()[0] == "image cat <1>.png: predicted c1 (1) (p=0.700); explaining c1 (1) (p=0.700)"
    assert "L1->logits  completeness: sum 0.5 vs change 0.5 (relative error 1e-07)" in text
    assert [c["ierf_overlay"] for c in to_json_ready(e)["layers"][0]["contributions"]] == \
        [f"<{len(webp())} bytes>", None]
    ready = write_overlays(e, tmp_path)
    assert ready["layers"][0]["contributions"][0]["ierf_overlay"] == "L1_2.webp"
    assert (tmp_path / "L1_2.webp").read_bytes() == webp() and (tmp_path / "explanation.json").exists()
