"""The report's layout in real headless Chromium: one test per layout bug of issue 12 (DOM measurements where they
see the problem, screenshots where they cannot: clipping by an SVG viewport, a legend drawn over curves, an iERF view
that washes an image out)."""
import io
import re

import pytest
from graph_factory import deletion_report, exemplars_for, full_evidence, random_graph
from PIL import Image, ImageChops, ImageStat
from report_browser import ink_box, needs_chromium, probe, screenshot

from gigaudit.report import build_report, charts, write_report
from gigaudit.results import Exemplar

pytestmark = needs_chromium

LONG_LAYERS = [f"backbone.stage{i}.block{i}.conv_expand" for i in range(8)]


def renamed(graph: dict, layers: list[str]) -> dict:
    """`graph` with its analysed layers renamed (ids, edges and evidence keys follow)."""
    mapping = {f"features.{i}": name for i, name in enumerate(layers)}

    def node_id(nid: str) -> str:
        layer, index = nid.split(":")
        return f"{mapping.get(layer, layer)}:{index}"

    for node in graph["nodes"]:
        node["id"], node["layer"] = node_id(node["id"]), mapping.get(node["layer"], node["layer"])
    for edge in graph["edges"]:
        edge["source"], edge["target"] = node_id(edge["source"]), node_id(edge["target"])
    graph["layers"] = [mapping.get(layer, layer) for layer in graph["layers"]]
    graph["evidence"] = {}
    return graph


def test_collapsed_layer_headings_do_not_overlap(tmp_path):
    graph = renamed(random_graph(n_layers=8, k=4, n_classes=3), LONG_LAYERS)
    path = write_report(tmp_path, graph)
    boxes = probe(path, """
        return [...document.querySelectorAll('#graph .column-title')].map((t) => {
          const r = t.getBoundingClientRect(); return [r.left, r.right, t.textContent]; });""",
                  "#collapse=" + ",".join(LONG_LAYERS[:6]))
    assert len(boxes) == 9
    for (_, right, text), (left, _, following) in zip(boxes, boxes[1:]):
        assert right <= left, f"heading {text!r} runs into {following!r}"


def test_eight_layers_keep_class_labels_whole_and_the_class_column_in_view(tmp_path):
    graph = renamed(random_graph(n_layers=8, k=4, n_classes=3), LONG_LAYERS)
    names = ["n01440764 tench, Tinca tinca", "n02102040 English springer", "n03028079 church building"]
    for node in graph["nodes"]:
        if node["kind"] == "class":
            node["name"] = names[node["index"]]
    path = write_report(tmp_path, graph)
    found = probe(path, """
        const wrap = document.getElementById('graph-wrap').getBoundingClientRect();
        const labels = [...document.querySelectorAll('#graph .node.class text:first-of-type')].map((t) => {
          const r = t.getBoundingClientRect(); return [t.textContent, r.right]; });
        const g = document.getElementById('graph-wrap');
        return {right: wrap.right, labels, scroll: g.scrollWidth - g.clientWidth};""")
    assert sorted(text for text, _ in found["labels"]) == sorted(names)  # whole, not shortened
    assert found["scroll"] <= 0  # nothing to scroll to: the class column is in view
    assert all(right <= found["right"] for _, right in found["labels"])


def chart_page(tmp_path, svgs: list[str], css: str = "") -> "Path":  # noqa: F821
    """The charts alone, each at a known place with 60 px of white around it; SVG overflow visible, so what the
    chart's own viewport would clip shows up outside its box."""
    blocks = "".join(f'<div style="position:absolute;left:60px;top:{60 + 400 * i}px">{svg}</div>'
                     for i, svg in enumerate(svgs))
    page = tmp_path / f"charts{abs(hash(css)) % 1000}.html"
    page.write_text(f"<!DOCTYPE html><html><head><style>body{{margin:0;background:#fff;font-family:sans-serif}}"
                    f"svg{{overflow:visible;border:0 !important}}{css}</style></head><body>{blocks}</body></html>")
    return page


def awkward_charts() -> list[str]:
    report = deletion_report(0.3, {"random": 1.0, "abs_coefficient": 0.7, "grad_x_coefficient": 0.5,
                                   "leave_one_out": 2.0})
    fractions = [i / 10 for i in range(11)]
    curves = {name: [123456.7 * v for v in o["insertion_curve"]] for name, o in report["orders"].items()}
    small = {name: [-0.000123 + 0.0004 * v for v in o["deletion_curve"]] for name, o in report["orders"].items()}
    return [charts.line_chart("insertion[a->b]", fractions, curves, x_label="fraction of concepts", highlight="gig"),
            charts.line_chart("deletion[a->b]", fractions, small, x_label="fraction", y_label="probability",
                              highlight="gig"),
            charts.bar_chart("spliced top1", {"layer1.0": 0.000123, "layer4.1.conv_expand": 12345.0}, y_label="x")]


def test_chart_ticks_and_labels_are_not_clipped(tmp_path):
    svgs = awkward_charts()
    shot = screenshot(chart_page(tmp_path, svgs), window=(600, 60 + 400 * len(svgs)))
    for i, svg in enumerate(svgs):
        width, height = (int(v) for v in re.search(r'width="(\d+)" height="(\d+)"', svg).groups())
        top = 60 + 400 * i
        around = shot.crop((0, top - 50, 60 + width + 50, top + height + 50))
        inside = Image.new("RGB", (width, height), "white")
        around.paste(inside, (60, 50))  # blank the chart's own box: whatever ink is left lies outside it
        assert ink_box(around) is None, f"chart {i} draws {ink_box(around)} outside its box (clipped on a page)"
        assert ink_box(shot.crop((60, top, 60 + width, top + height))) is not None


def test_legends_do_not_sit_on_the_curves(tmp_path):
    svgs = awkward_charts()[:2]
    window = (600, 60 + 400 * len(svgs))
    hide = ".legend{visibility:hidden}", ".curves{visibility:hidden}"
    bare = screenshot(chart_page(tmp_path, svgs, hide[0] + hide[1]), window=window, name="bare.png")
    legend = ImageChops.difference(screenshot(chart_page(tmp_path, svgs, hide[1]), window=window, name="l.png"), bare)
    curves = ImageChops.difference(screenshot(chart_page(tmp_path, svgs, hide[0]), window=window, name="c.png"), bare)
    legend_ink, curve_ink = (img.convert("L").point(lambda v: 255 if v > 40 else 0) for img in (legend, curves))
    assert legend_ink.getbbox() and curve_ink.getbbox()
    assert ImageChops.multiply(legend_ink, curve_ink).getbbox() is None  # no pixel is both legend and curve
    for i in range(len(svgs)):  # and every legend lies below its plot, not beside the curves
        band = (0, 60 + 400 * i, 600, 60 + 400 * (i + 1) - 60)
        legend_box, curve_box = legend_ink.crop(band).getbbox(), curve_ink.crop(band).getbbox()
        assert legend_box[1] > curve_box[3]


def test_auc_tables_list_the_best_ordering_first(graph):
    html = build_report(graph)
    tables = re.findall(r'<table class="auc"><thead><tr><th>order</th><th>AUC \((\w+) is better, best first\)</th>'
                        r'</tr></thead><tbody>(.*?)</tbody>', html)
    assert len(tables) == 4
    for better, body in tables:
        values = [float(v) for v in re.findall(r"<tr><td>\w+</td><td>([-\d.e]+)</td></tr>", body)]
        assert values == sorted(values, reverse=better == "higher"), (better, values)
    assert "best ordering first" in html


def test_baselines_keep_their_colours_across_reports(graph):
    def colours(evidence: dict) -> dict[str, str]:
        html = build_report({**graph, "evidence": evidence})
        return dict((name, colour) for colour, name in re.findall(r'stroke="(#\w+)" stroke-width="[\d.]+" '
                                                                  r'points="[^"]*" data-series="(\w+)"', html))

    first = colours({"deletion": {"a->logits": deletion_report(0.5, {"random": 1.0, "abs_coefficient": 0.7})}})
    second = colours({"deletion": {"a->logits": deletion_report(0.5, {"leave_one_out": 2.0, "abs_coefficient": 0.6,
                                                                      "my_order": 0.9, "random": 1.1})}})
    assert first["gig"] == second["gig"] == "#000000"
    assert first["random"] == second["random"] and first["abs_coefficient"] == second["abs_coefficient"]
    assert len(set(second.values())) == len(second)  # all told apart
    assert second["my_order"] == charts.colour_of("my_order")  # unknown names: a colour of their own letters


def checkerboard(size: int = 24) -> bytes:
    img = Image.new("RGB", (size, size))
    img.putdata([(230, 230, 230) if (x // 3 + y // 3) % 2 else (25, 25, 25) for y in range(size) for x in range(size)])
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def heat_blob(size: int = 24) -> bytes:
    img = Image.new("L", (size, size), 0)
    img.paste(255, (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def test_ierf_views_keep_small_thumbnails_readable(tmp_path):
    graph = random_graph(k=3, n_classes=2)
    shots = {"features.0:0": [Exemplar("features.0:0", 1, 2, 1.5, checkerboard(), heat_blob(), "cat/1.png")]}
    path = write_report(tmp_path, graph, exemplars=shots)
    rects = probe(path, """
        return ['img.crop', 'img.ierf'].map((s) => { const r = document.querySelector('#gallery ' + s)
          .getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; });""", "#select=features.0:0")
    shot = screenshot(path, "#select=features.0:0", window=(1200, int(max(r[3] for r in rects)) + 40))
    crop, view = (shot.crop(tuple(round(v) for v in r)).convert("L") for r in rects)

    def contrast(img: Image.Image) -> float:  # of the checkerboard in the central half, where the iERF is high
        w, h = img.size
        return ImageStat.Stat(img.crop((w * 3 // 10, h * 3 // 10, w * 7 // 10, h * 7 // 10))).stddev[0]

    assert contrast(crop) > 80
    assert contrast(view) > 0.8 * contrast(crop), "the iERF view washes the region it points at out"
    w, h = view.size
    corner, centre = (ImageStat.Stat(view.crop(box)).mean[0] for box in ((0, 0, w // 6, h // 6),
                                                                         (w // 3, h // 3, 2 * w // 3, 2 * h // 3)))
    assert corner < 0.6 * centre  # outside the iERF the image is darkened


def test_exemplar_captions_are_explained(graph, tmp_path):
    path = write_report(tmp_path, graph, exemplars=exemplars_for(graph))
    found = probe(path, """
        return {legend: document.getElementById('gallery-legend').textContent,
                captions: [...document.querySelectorAll('#gallery .caption')].map((c) => [c.textContent, c.title])};""",
                  "#select=features.0:2")
    assert all(word in found["legend"] for word in ("#image", "@position", "coefficient", "iERF"))
    assert len(found["captions"]) == 2
    for text, title in found["captions"]:
        image, position = re.fullmatch(r"#(\d+) @(\d+) · [\d.]+", text).groups()
        assert f"dataset image {image}" in title and f"position {position}" in title and "coefficient" in title


def test_clicks_update_the_url_and_the_url_restores_the_view(graph, tmp_path):
    path = write_report(tmp_path, graph, exemplars=exemplars_for(graph))
    hash_ = probe(path, """
        document.querySelector('#graph .node[data-id="features.1:3"]').dispatchEvent(new MouseEvent('click'));
        const circuit = document.getElementById('circuit'); circuit.value = 'logits:2';
        circuit.dispatchEvent(new Event('change'));
        [...document.querySelectorAll('.layer-toggle')].find((b) => b.textContent === 'features.0').click();
        const topk = document.getElementById('top-k'); topk.value = '2'; topk.dispatchEvent(new Event('input'));
        return location.hash;""")
    assert hash_ == "#circuit=logits:2&select=features.1:3&collapse=features.0&topk=2"
    restored = probe(path, """
        return {title: document.getElementById('details-title').textContent,
                circuit: document.getElementById('circuit').value, topk: document.getElementById('top-k').value,
                collapsed: [...document.querySelectorAll('.layer-toggle.collapsed')].map((b) => b.textContent),
                selected: document.querySelector('#graph .node.selected').dataset.id, hash: location.hash};""", hash_)
    assert restored == {"title": "features.1:3", "circuit": "logits:2", "topk": "2", "collapsed": ["features.0"],
                        "selected": "features.1:3", "hash": hash_}


@pytest.fixture
def graph() -> dict:
    return random_graph(evidence=full_evidence())
