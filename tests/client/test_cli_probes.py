"""`gigaudit audit --probes DIR`: the local checks of a probe folder, and what the CLI prints about the naming."""
from __future__ import annotations

import pytest
from graph_factory import make_graph, name_nodes, png

from gigaudit import cli
from gigaudit.report import build_report, report_data
from gigaudit.results import ConceptGraph


def test_probe_folders_are_checked_before_anything_is_uploaded(tmp_path):
    (tmp_path / "watermark" / "masks").mkdir(parents=True)
    (tmp_path / "watermark" / "a.png").write_bytes(png((200, 10, 10)))
    (tmp_path / "watermark" / "masks" / "a.png").write_bytes(png((255,), grey=True))
    assert cli._checked_probes(tmp_path) == tmp_path
    (tmp_path / "grass").mkdir()
    with pytest.raises(ValueError, match="probe folder 'grass' holds no images"):
        cli._checked_probes(tmp_path)
    (tmp_path / "grass" / "masks").mkdir()
    (tmp_path / "grass" / "masks" / "a.png").write_bytes(png((255,), grey=True))
    with pytest.raises(ValueError, match="probe folder 'grass' holds no images"):  # masks alone are no probe
        cli._checked_probes(tmp_path)
    (tmp_path / "loose.png").write_bytes(png((1, 2, 3)))
    with pytest.raises(ValueError, match="images lie loose"):
        cli._checked_probes(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x").mkdir()
    with pytest.raises(ValueError, match="probe folder 'x' holds no images"):
        cli._checked_probes(empty)


def test_the_naming_is_printed_and_audit_ids_without_probes_stay_the_same(capsys):
    graph = make_graph({("features.1:0", "logits:0"): {"values": [1.0, 0.5], "classes": [0, 0]}},
                       ["features.0", "features.1"], 2, ["cat"])
    cli._print_naming(ConceptGraph(name_nodes(graph, {"features.1:0": "watermark"}, unmatched=["grass"])))
    err = capsys.readouterr().err
    assert "gigaudit: named features.1:0 'watermark' (score 0.90, held-out 0.85)" in err
    assert "gigaudit: warning: probe 'grass' matched no concept (best features.1:2, score 0.55)" in err

    class Args:
        layers, n_concepts, seed, steps, top_t = [], 0, 0, 0, 0
    plain = cli._audit_options(Args, "models/m", "datasets/d")
    assert "probes" not in plain and cli._audit_options(Args, "models/m", "datasets/d", "")  == plain
    assert cli._audit_options(Args, "models/m", "datasets/d", "datasets/p")["probes"] == "datasets/p"


def test_the_report_shows_names_their_held_out_check_and_the_unmatched_probes():
    graph = make_graph({("features.1:0", "logits:0"): {"values": [1.0, 0.5], "classes": [0, 0]}},
                       ["features.0", "features.1"], 2, ["cat"])
    html = build_report(name_nodes(graph, {"features.1:0": "watermark"}, unmatched=["grass"]), max_bytes=0)
    nodes = {n["id"]: n for n in report_data(html)["nodes"]}
    assert nodes["features.1:0"]["name"] == "watermark" and nodes["features.1:0"]["name_score"] == 0.9
    assert "name" not in nodes["features.1:1"]
    assert 'id="naming"' in html and "<td>watermark</td><td>features.1:0</td><td>0.9</td><td>0.85</td>" in html
    assert 'id="unmatched"' in html and "<b>grass</b> (best: features.1:2, score 0.55)" in html
    assert "Other evidence" not in html  # the naming is not dumped as a raw metric
