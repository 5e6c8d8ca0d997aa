/* gigaudit report: draws the concept graph layer by layer from the inline JSON (no network, no libraries).
 * Columns are as wide as their headings and labels need (headings and long labels are shortened with an ellipsis,
 * the full text in a tooltip) and shrink to fit the window, so no heading overlaps another and the class column
 * stays in view. The view is kept in the URL (#circuit=…&select=…&search=…&collapse=…&topk=…&nodes=…): every
 * click updates it and opening the link restores it. */
(function () {
  "use strict";
  const errors = document.getElementById("errors");
  window.addEventListener("error", (e) => { errors.hidden = false; errors.textContent += e.message + "\n"; });

  const SVG = "http://www.w3.org/2000/svg";
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const byId = new Map(data.nodes.map((n) => [n.id, n]));
  const incoming = new Map(), outgoing = new Map();
  for (const e of data.edges) {
    if (!incoming.has(e[1])) incoming.set(e[1], []);
    if (!outgoing.has(e[0])) outgoing.set(e[0], []);
    incoming.get(e[1]).push(e);
    outgoing.get(e[0]).push(e);
  }
  const defaults = { topK: data.controls.top_k, perLayer: data.controls.nodes_per_layer };
  const state = { topK: defaults.topK, perLayer: defaults.perLayer, circuit: "", search: "", collapsed: new Set(),
    selected: null };
  const NODE = 44, GAP = 22, TOP = 34, LEFT = 12, PAD = 14;
  const WIDE = 190, NARROW = 96, CLASS_MAX = 300, COLLAPSED_MAX = 150;
  const TITLE_FONT = "bold 12px system-ui, sans-serif", LABEL_FONT = "10px system-ui, sans-serif";
  const ruler = document.createElement("canvas").getContext("2d");

  function textWidth(text, font) { ruler.font = font; return ruler.measureText(text).width; }

  /* `text` shortened with an ellipsis to at most `width` px. */
  function fitted(text, font, width) {
    if (textWidth(text, font) <= width) return text;
    let lo = 0, hi = text.length;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (textWidth(text.slice(0, mid) + "…", font) <= width) lo = mid; else hi = mid - 1;
    }
    return text.slice(0, lo) + "…";
  }

  function el(tag, attrs, parent) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }

  function label(n) {
    if (n.kind === "class") return n.label;
    return n.name ? `${n.id.split(":").pop()} ${n.name}` : n.id.split(":").pop();
  }

  function thumb(id) {
    const shots = data.gallery[id] || [];
    return shots.length && shots[0].src ? shots[0].src : null;
  }

  /* Which nodes and edges to draw under the current controls. */
  function visible() {
    const circuit = state.circuit ? data.circuits[state.circuit] : null;
    const forced = new Set(circuit ? circuit.nodes : []);
    const found = state.search ? data.nodes.filter((n) => n.id.includes(state.search)).map((n) => n.id) : [];
    found.forEach((id) => forced.add(id));
    if (state.selected) forced.add(state.selected);
    const shown = new Set();
    for (const layer of data.columns) {
      if (state.collapsed.has(layer)) continue;
      const nodes = data.nodes.filter((n) => n.layer === layer);
      const ranked = layer === "logits" ? nodes : nodes.slice().sort((a, b) => b.relevance - a.relevance);
      ranked.slice(0, state.perLayer).forEach((n) => shown.add(n.id));
      nodes.forEach((n) => { if (forced.has(n.id)) shown.add(n.id); });
    }
    const edges = [];
    for (const [target, list] of incoming) {
      if (!shown.has(target)) continue;
      list.filter((e) => shown.has(e[0]))
        .sort((a, b) => Math.abs(b[2]) - Math.abs(a[2]))
        .slice(0, state.topK).forEach((e) => edges.push(e));
    }
    return { shown, edges, found: new Set(found), circuit };
  }

  /* Column widths: what headings and labels need, concept columns widened for the edges up to WIDE while the
   * whole graph fits the window, and never narrower than their content. */
  function columnWidths(view) {
    const available = Math.max(document.getElementById("graph-wrap").clientWidth - 2 * LEFT, 400);
    const cols = data.columns.map((layer) => {
      if (state.collapsed.has(layer)) {
        return { layer, collapsed: true, width: Math.min(textWidth("▸ " + layer, TITLE_FONT), COLLAPSED_MAX) + PAD };
      }
      const nodes = data.nodes.filter((n) => n.layer === layer && view.shown.has(n.id));
      const labels = Math.max(textWidth("f=0.00", LABEL_FONT), ...nodes.map((n) => textWidth(label(n), LABEL_FONT)));
      const isClass = layer === "logits";
      const content = NODE + 4 + Math.min(labels, isClass ? CLASS_MAX : WIDE) + PAD;
      return { layer, nodes, isClass, content, width: Math.max(content, isClass ? 0 : NARROW) };
    });
    const grow = cols.filter((c) => !c.collapsed && !c.isClass);
    let spare = available - cols.reduce((s, c) => s + c.width, 0);
    for (const c of grow) {  // share the spare room out evenly, up to WIDE each
      const extra = Math.max(0, Math.min(WIDE - c.width, spare / grow.length));
      c.width += extra;
    }
    return cols;
  }

  function draw() {
    const svg = document.getElementById("graph");
    svg.replaceChildren();
    const view = visible();
    const pos = new Map();
    const cols = columnWidths(view);
    let height = 0, x = LEFT;
    for (const c of cols) {
      const name = (c.collapsed ? "▸ " : "") + c.layer;
      const title = el("text", { x: x, y: 16, class: "column-title" + (c.collapsed ? " collapsed" : ""),
        "data-layer": c.layer }, svg);
      title.textContent = fitted(name, TITLE_FONT, c.width - PAD);
      el("title", {}, title).textContent = c.layer + (c.collapsed ? " (collapsed: click its toggle to show)" : "");
      if (!c.collapsed) {
        if (!c.isClass) c.nodes.sort((a, b) => b.relevance - a.relevance);
        c.nodes.forEach((n, i) => pos.set(n.id, { x: x, y: TOP + i * (NODE + GAP), width: c.width }));
        height = Math.max(height, TOP + c.nodes.length * (NODE + GAP));
      }
      x += c.width;
    }
    svg.setAttribute("width", Math.ceil(x + LEFT));
    svg.setAttribute("height", height + 10);
    svg.classList.toggle("circuit", !!view.circuit);
    const inCircuit = new Set(view.circuit ? view.circuit.edges.map((e) => e[0] + ">" + e[1]) : []);
    const edgeLayer = el("g", {}, svg);
    for (const e of view.edges) {
      const a = pos.get(e[0]), b = pos.get(e[1]);
      if (!a || !b) continue;
      const x1 = a.x + NODE, y1 = a.y + NODE / 2, x2 = b.x, y2 = b.y + NODE / 2, mid = (x1 + x2) / 2;
      const path = el("path", {
        d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`,
        class: "edge " + (e[2] >= 0 ? "pos" : "neg") + (inCircuit.has(e[0] + ">" + e[1]) ? " in-circuit" : ""),
        "stroke-width": (0.5 + 8 * Math.abs(e[2])).toFixed(2),
      }, edgeLayer);
      el("title", {}, path).textContent = `${e[0]} → ${e[1]}  share ${e[2].toFixed(3)}  mean ${e[3].toPrecision(3)}  n=${e[4]}`;
    }
    const circuitNodes = new Set(view.circuit ? view.circuit.nodes : []);
    for (const [id, p] of pos) {
      const n = byId.get(id);
      const cls = ["node", n.kind, circuitNodes.has(id) ? "in-circuit" : "", view.found.has(id) ? "found" : "",
        state.selected === id ? "selected" : ""].join(" ");
      const g = el("g", { class: cls, transform: `translate(${p.x},${p.y})`, "data-id": id }, svg);
      el("rect", { width: NODE, height: NODE, rx: 4 }, g);
      const src = n.kind === "concept" ? thumb(id) : null;
      if (src) el("image", { href: src, x: 2, y: 2, width: NODE - 4, height: NODE - 4 }, g);
      el("text", { x: NODE + 4, y: 14, class: "label" }, g).textContent =
        fitted(label(n), LABEL_FONT, p.width - NODE - PAD);
      el("text", { x: NODE + 4, y: 28 }, g).textContent = "f=" + (+n.frequency).toFixed(2);
      el("title", {}, g).textContent = `${n.label}${n.name ? " " + n.name : ""}  frequency ${(+n.frequency).toFixed(3)}  relevance ${n.relevance}`;
      g.addEventListener("click", () => select(id));
    }
    const first = view.found.size ? svg.querySelector(".node.found") : null;
    if (first && state.searchMoved !== state.search) { first.scrollIntoView({ block: "center" }); state.searchMoved = state.search; }
    document.body.dataset.rendered = `${pos.size} nodes, ${view.edges.length} edges`;
    document.body.dataset.found = svg.querySelectorAll(".node.found").length;
    writeHash();
  }

  function edgeRows(table, list, end) {
    table.replaceChildren();
    list.slice().sort((a, b) => Math.abs(b[2]) - Math.abs(a[2])).slice(0, 10).forEach((e) => {
      const tr = table.insertRow();
      const link = tr.insertCell();
      link.textContent = byId.get(e[end]).label;
      link.style.cursor = "pointer";
      link.addEventListener("click", () => select(e[end]));
      tr.insertCell().textContent = e[2].toFixed(3);
    });
  }

  function caption(ex) {
    const coefficient = (+ex.coefficient).toPrecision(3);
    const cap = document.createElement("div");
    cap.className = "caption";
    cap.textContent = `#${ex.image} @${ex.position} · ${coefficient}`;
    cap.title = `dataset image ${ex.image}${ex.name ? " (" + ex.name + ")" : ""} · strongest position ${ex.position} ` +
      `(row-major index in the layer's feature map) · coefficient ${coefficient}`;
    return cap;
  }

  function showGallery(id) {
    const gallery = document.getElementById("gallery"), missing = document.getElementById("gallery-missing");
    gallery.replaceChildren();
    const shots = data.gallery[id] || [];
    const absent = [];
    for (const ex of shots) {
      if (!ex.src) { absent.push(ex); continue; }
      const box = document.createElement("div");
      box.className = "exemplar";
      const pair = document.createElement("div");
      pair.className = "pair";
      const img = document.createElement("img");
      img.src = ex.src;
      img.className = "crop";
      img.alt = `crop of dataset image ${ex.image}`;
      pair.appendChild(img);
      if (ex.ierf) {
        const view = document.createElement("img");
        view.src = ex.ierf;
        view.className = "ierf";
        view.alt = `iERF of dataset image ${ex.image}`;
        pair.appendChild(view);
      }
      box.appendChild(pair);
      box.appendChild(caption(ex));
      gallery.appendChild(box);
    }
    const n = byId.get(id);
    if (n.kind !== "concept") missing.textContent = "";
    else if (absent.length) {
      missing.textContent = `Not embedded (report size budget): ${absent.length} exemplar image(s) — ` +
        absent.map((ex) => `#${ex.image}${ex.name ? " " + ex.name : ""} @${ex.position}`).join(", ") + ".";
    } else if (!shots.length) {
      missing.textContent = "This report holds no exemplar images of this concept: the server renders the most " +
        "relevant concepts of every layer, others on demand (AuditClient.render_exemplars).";
    } else missing.textContent = "";
    missing.hidden = !missing.textContent;
  }

  function select(id) {
    state.selected = id;
    const n = byId.get(id);
    document.getElementById("details").hidden = false;
    document.getElementById("details-title").textContent = n.label + (n.kind === "class" ? " (class)" : "") +
      (n.name ? ` — ${n.name} (name score ${(+n.name_score).toFixed(2)})` : "");
    document.getElementById("details-facts").textContent =
      `layer ${n.layer} · count ${n.count} · frequency ${(+n.frequency).toFixed(3)}` +
      (n.mean_coefficient != null ? ` · mean coefficient ${(+n.mean_coefficient).toPrecision(3)}` : "") +
      ` · relevance ${n.relevance}`;
    showGallery(id);
    edgeRows(document.getElementById("inputs"), incoming.get(id) || [], 0);
    edgeRows(document.getElementById("outputs"), outgoing.get(id) || [], 1);
    draw();
  }

  /* The view as a URL fragment; ':' and ',' are left readable. */
  function writeHash() {
    const parts = [];
    const put = (k, v) => parts.push(k + "=" + encodeURIComponent(v).replace(/%3A/g, ":").replace(/%2C/g, ","));
    if (state.circuit) put("circuit", state.circuit);
    if (state.selected) put("select", state.selected);
    if (state.search) put("search", state.search);
    if (state.collapsed.size) put("collapse", [...state.collapsed].join(","));
    if (state.topK !== defaults.topK) put("topk", state.topK);
    if (state.perLayer !== defaults.perLayer) put("nodes", state.perLayer);
    const hash = parts.length ? "#" + parts.join("&") : "";
    if (hash !== location.hash && !(hash === "" && location.hash === "#")) {
      history.replaceState(null, "", hash || location.pathname + location.search);
    }
  }

  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    state.circuit = data.circuits[params.get("circuit")] ? params.get("circuit") : "";
    state.search = params.get("search") || "";
    state.topK = params.get("topk") ? Math.max(1, +params.get("topk") || 1) : defaults.topK;
    state.perLayer = params.get("nodes") ? Math.max(1, +params.get("nodes") || 1) : defaults.perLayer;
    state.collapsed = new Set((params.get("collapse") || "").split(",").filter((l) => data.columns.includes(l)));
    document.getElementById("circuit").value = state.circuit;
    document.getElementById("search").value = state.search;
    document.getElementById("top-k").value = state.topK;
    document.getElementById("per-layer").value = state.perLayer;
    document.querySelectorAll(".layer-toggle").forEach((b) => b.classList.toggle("collapsed", state.collapsed.has(b.dataset.layer)));
    const chosen = params.get("select");
    if (chosen && byId.has(chosen)) select(chosen);
    else {
      state.selected = null;
      document.getElementById("details").hidden = true;
      draw();
    }
  }

  function bind() {
    const topK = document.getElementById("top-k"), perLayer = document.getElementById("per-layer");
    topK.max = data.controls.max_edges;
    topK.addEventListener("input", () => { state.topK = Math.max(1, +topK.value || 1); draw(); });
    perLayer.addEventListener("input", () => { state.perLayer = Math.max(1, +perLayer.value || 1); draw(); });
    const circuit = document.getElementById("circuit");
    for (const [id, c] of Object.entries(data.circuits)) {
      const opt = document.createElement("option");
      opt.value = id;
      opt.textContent = c.label;
      circuit.appendChild(opt);
    }
    circuit.addEventListener("change", () => { state.circuit = circuit.value; draw(); });
    const search = document.getElementById("search");
    search.addEventListener("input", () => { state.search = search.value.trim(); draw(); });
    const layers = document.getElementById("layers");
    layers.append("layers: ");
    for (const layer of data.columns) {
      const b = document.createElement("span");
      b.className = "layer-toggle";
      b.textContent = layer;
      b.dataset.layer = layer;
      b.addEventListener("click", () => {
        if (state.collapsed.has(layer)) state.collapsed.delete(layer); else state.collapsed.add(layer);
        b.classList.toggle("collapsed", state.collapsed.has(layer));
        draw();
      });
      layers.appendChild(b);
    }
    document.getElementById("show-ierf").addEventListener("change", (e) => {
      document.getElementById("gallery").classList.toggle("no-ierf", !e.target.checked);
    });
    window.addEventListener("hashchange", readHash);
    let width = 0;
    window.addEventListener("resize", () => { if (window.innerWidth !== width) { width = window.innerWidth; draw(); } });
  }

  bind();
  readHash();
})();
