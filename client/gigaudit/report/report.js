/* gigaudit report: draws the concept graph layer by layer from the inline JSON (no network, no libraries). */
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
  const state = {
    topK: data.controls.top_k, perLayer: data.controls.nodes_per_layer, circuit: "", search: "",
    collapsed: new Set(), selected: null,
  };
  const NODE = 44, GAP = 22, COL = 190, TOP = 30, LEFT = 20;

  function el(tag, attrs, parent) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
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

  function draw() {
    const svg = document.getElementById("graph");
    svg.replaceChildren();
    const view = visible();
    const pos = new Map();
    let height = 0, x = LEFT;
    for (const layer of data.columns) {
      const title = el("text", { x: x, y: 16, class: "column-title" }, svg);
      if (state.collapsed.has(layer)) {
        title.textContent = layer + " (collapsed)";
        x += 110;
        continue;
      }
      title.textContent = layer;
      const nodes = data.nodes.filter((n) => n.layer === layer && view.shown.has(n.id));
      if (layer !== "logits") nodes.sort((a, b) => b.relevance - a.relevance);
      nodes.forEach((n, i) => pos.set(n.id, { x: x, y: TOP + i * (NODE + GAP) }));
      height = Math.max(height, TOP + nodes.length * (NODE + GAP));
      x += COL;
    }
    svg.setAttribute("width", x);
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
      if (n.thumb) el("image", { href: n.thumb, x: 2, y: 2, width: NODE - 4, height: NODE - 4 }, g);
      el("text", { x: NODE + 4, y: 14 }, g).textContent = n.kind === "class" ? n.label : id.split(":").pop();
      el("text", { x: NODE + 4, y: 28 }, g).textContent = "f=" + (+n.frequency).toFixed(2);
      el("title", {}, g).textContent = `${n.label}  frequency ${(+n.frequency).toFixed(3)}  relevance ${n.relevance}`;
      g.addEventListener("click", () => select(id));
    }
    const first = view.found.size ? svg.querySelector(".node.found") : null;
    if (first && state.searchMoved !== state.search) { first.scrollIntoView({ block: "center" }); state.searchMoved = state.search; }
    document.body.dataset.rendered = `${pos.size} nodes, ${view.edges.length} edges`;
    document.body.dataset.found = svg.querySelectorAll(".node.found").length;
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

  function select(id) {
    state.selected = id;
    const n = byId.get(id);
    document.getElementById("details").hidden = false;
    document.getElementById("details-title").textContent = n.label + (n.kind === "class" ? " (class)" : "");
    document.getElementById("details-facts").textContent =
      `layer ${n.layer} · count ${n.count} · frequency ${(+n.frequency).toFixed(3)}` +
      (n.mean_coefficient != null ? ` · mean coefficient ${(+n.mean_coefficient).toPrecision(3)}` : "") +
      ` · relevance ${n.relevance}`;
    const gallery = document.getElementById("gallery");
    gallery.replaceChildren();
    for (const ex of data.gallery[id] || []) {
      const box = document.createElement("div");
      box.className = "exemplar";
      const img = document.createElement("img");
      img.src = ex.src;
      box.appendChild(img);
      if (ex.overlay) {
        const over = document.createElement("img");
        over.src = ex.overlay;
        over.className = "overlay";
        box.appendChild(over);
      }
      const cap = document.createElement("div");
      cap.textContent = `img ${ex.image} @${ex.position} · ${(+ex.coefficient).toPrecision(3)}`;
      if (ex.name) cap.title = ex.name;
      box.appendChild(cap);
      gallery.appendChild(box);
    }
    edgeRows(document.getElementById("inputs"), incoming.get(id) || [], 0);
    edgeRows(document.getElementById("outputs"), outgoing.get(id) || [], 1);
    draw();
  }

  function bind() {
    const topK = document.getElementById("top-k"), perLayer = document.getElementById("per-layer");
    topK.value = state.topK;
    topK.max = data.controls.max_edges;
    perLayer.value = state.perLayer;
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
      b.addEventListener("click", () => {
        if (state.collapsed.has(layer)) state.collapsed.delete(layer); else state.collapsed.add(layer);
        b.classList.toggle("collapsed");
        draw();
      });
      layers.appendChild(b);
    }
    document.getElementById("show-ierf").addEventListener("change", (e) => {
      document.getElementById("gallery").classList.toggle("no-ierf", !e.target.checked);
    });
  }

  bind();
  /* The view can be linked: #circuit=logits:3&select=layer:5&search=layer:&collapse=a,b&topk=2&nodes=20 */
  const params = new URLSearchParams(location.hash.slice(1));
  if (params.get("circuit")) { state.circuit = params.get("circuit"); document.getElementById("circuit").value = state.circuit; }
  if (params.get("search")) { state.search = params.get("search"); document.getElementById("search").value = state.search; }
  if (params.get("topk")) { state.topK = Math.max(1, +params.get("topk") || 1); document.getElementById("top-k").value = state.topK; }
  if (params.get("nodes")) { state.perLayer = Math.max(1, +params.get("nodes") || 1); document.getElementById("per-layer").value = state.perLayer; }
  for (const layer of (params.get("collapse") || "").split(",").filter(Boolean)) {
    state.collapsed.add(layer);
    document.querySelectorAll(".layer-toggle").forEach((b) => { if (b.textContent === layer) b.classList.add("collapsed"); });
  }
  if (params.get("select") && byId.has(params.get("select"))) select(params.get("select")); else draw();
})();
