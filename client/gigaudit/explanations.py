"""Per-image explanations (`ExplainImage`) as plain dicts: for the CLI (`gigaudit explain`), files and the report.

An explanation dict::

    {"graph", "image" (the file's name), "predicted_class", "predicted_label", "target_class", "target_label",
     "probabilities": [...], "completeness": {"<source>-><target>": {"attribution_sum", "target_difference",
     "delta", "relative", "steps", "method", ...}},
     "layers": [{"source", "target", "contributions": [{"node_id", "concept", "label", "attribution",
                                                        "coefficient", "ierf_overlay": WebP bytes}]}]}

`to_json_ready` replaces the overlay bytes by their file names (after `write_overlays`) or their sizes.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from gigaudit.output import plain


def explanation_to_dict(message, *, graph: str, image: str, class_names=()) -> dict:
    """The dict of an `ImageExplanation` message (see the module docstring)."""
    names = list(class_names)

    def label(index: int) -> str | None:
        return names[index] if 0 <= index < len(names) else None

    return {
        "graph": graph, "image": image, "predicted_class": message.predicted_class,
        "predicted_label": message.predicted_label or label(message.predicted_class),
        "target_class": message.target_class, "target_label": label(message.target_class),
        "probabilities": list(message.probabilities), "completeness": plain(message.completeness),
        "layers": [{"source": layer.source, "target": layer.target, "contributions": [
            {"node_id": c.node_id, "concept": c.concept, "label": c.label or None, "attribution": c.attribution,
             "coefficient": c.coefficient, "ierf_overlay": bytes(c.ierf_overlay)} for c in layer.contributions]}
            for layer in message.layers],
    }


def overlay_name(contribution: dict) -> str:
    """The file name of a contribution's overlay: `<layer>_<index>.webp` with the layer made file-safe."""
    layer, _, index = contribution["node_id"].rpartition(":")
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', layer)}_{index}.webp"


def write_overlays(explanation: dict, out_dir: str | Path) -> dict:
    """Write every overlay (WebP) and `explanation.json` (overlays named by file) to `out_dir`; returns that
    JSON-ready dict."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for layer in explanation["layers"]:
        for c in layer["contributions"]:
            if c["ierf_overlay"]:
                (out / overlay_name(c)).write_bytes(c["ierf_overlay"])
    ready = to_json_ready(explanation, files=True)
    (out / "explanation.json").write_text(json.dumps(ready, indent=2) + "\n")
    return ready


def to_json_ready(explanation: dict, files: bool = False) -> dict:
    """The explanation with each overlay replaced by its file name (`files`) or `"<N bytes>"`."""
    layers = []
    for layer in explanation["layers"]:
        contributions = []
        for c in layer["contributions"]:
            overlay = c["ierf_overlay"]
            shown = (overlay_name(c) if files else f"<{len(overlay)} bytes>") if overlay else None
            contributions.append({**c, "ierf_overlay": shown})
        layers.append({**layer, "contributions": contributions})
    return {**explanation, "layers": layers}


def table(explanation: dict) -> str:
    """Aligned text: the prediction, then per segment its contributions and completeness."""
    p = explanation["probabilities"]
    target, predicted = explanation["target_class"], explanation["predicted_class"]
    lines = [f"image {explanation['image']}: predicted {_class(explanation, 'predicted')} "
             f"(p={p[predicted]:.3f}); explaining {_class(explanation, 'target')} (p={p[target]:.3f})"]
    for layer in explanation["layers"]:
        pair = f"{layer['source']}->{layer['target']}"
        figures = explanation["completeness"].get(pair, {})
        lines.append("")
        lines.append(f"{pair}  completeness: sum {_num(figures.get('attribution_sum'))} vs change "
                     f"{_num(figures.get('target_difference'))} (relative error {_num(figures.get('relative'))})")
        rows = [["concept", "label", "attribution", "coefficient"]]
        rows += [[c["node_id"], c["label"] or "", _num(c["attribution"]), _num(c["coefficient"])]
                 for c in layer["contributions"]]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def _class(explanation: dict, which: str) -> str:
    index, label = explanation[f"{which}_class"], explanation.get(f"{which}_label")
    return f"{label} ({index})" if label else f"class {index}"


def _num(value) -> str:
    return "–" if value is None else f"{value:.4g}"
