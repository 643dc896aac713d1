/* semgraph report: interactive landscape view (vanilla JS + SVG, no network, no libraries).
 * Data comes from the JSON script element "semgraph-data"; every text is set with
 * textContent, never parsed as HTML. Pan: drag; zoom: wheel or the buttons; hover: details;
 * click a node or a run: highlight that run's path. */
(function () {
  "use strict";
  var SVGNS = "http://www.w3.org/2000/svg";
  var data = JSON.parse(document.getElementById("semgraph-data").textContent);
  var G = data.graph;

  function el(tag, attrs, parent, text) {
    var e = document.createElementNS(SVGNS, tag);
    for (var k in attrs) { if (Object.prototype.hasOwnProperty.call(attrs, k)) e.setAttribute(k, attrs[k]); }
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }
  function html(tag, cls, parent, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }
  function fmt(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v === "number") {
      if (Number.isInteger(v)) return String(v);
      return Math.abs(v) >= 1e4 || (Math.abs(v) > 0 && Math.abs(v) < 1e-3) ? v.toExponential(3)
        : String(Number(v.toPrecision(4)));
    }
    return String(v);
  }
  function truncate(s, n) { s = String(s); return s.length > n ? s.slice(0, n - 1) + "…" : s; }

  // ---- layout: data coordinates -> pixels --------------------------------------------------------------
  var W = 960, H = 500, M = { left: 120, right: 110, top: 50, bottom: 80 }, AX = 72;
  var xs = G.nodes.map(function (n) { return n.x; }), ys = G.nodes.map(function (n) { return n.y; });
  var xmin = Math.min.apply(null, xs.concat([0])), xmax = Math.max.apply(null, xs.concat([1]));
  var ymin = Math.min.apply(null, ys.concat([0])), ymax = Math.max.apply(null, ys.concat([0]));
  if (ymax - ymin < 0.2) { ymin -= 0.3; ymax += 0.3; }
  var yspan = ymax - ymin; ymin -= 0.08 * yspan; ymax += 0.08 * yspan;
  function px(x) { return M.left + (xmax === xmin ? 0.5 : (x - xmin) / (xmax - xmin)) * (W - M.left - M.right); }
  function py(y) { return M.top + (ymax - y) / (ymax - ymin) * (H - M.top - M.bottom); }
  var maxVisits = Math.max.apply(null, G.nodes.map(function (n) { return n.visits || 1; }).concat([1]));
  var maxCount = Math.max.apply(null, G.edges.map(function (e) { return e.count || 1; }).concat([1]));
  var byId = {};
  G.nodes.forEach(function (n) {
    n.px = px(n.x); n.py = py(n.y);
    n.r = 16 + 14 * Math.sqrt((n.visits || 1) / maxVisits);
    byId[n.id] = n;
  });

  var host = document.getElementById("graph");
  var svg = el("svg", { viewBox: "0 0 " + W + " " + H, id: "graph-svg", role: "img",
                        "aria-label": "landscape graph: nodes by fallibility, arrows are transitions" }, host);
  var defs = el("defs", {}, svg);
  [["arrow", "#6b7280"], ["arrow-on", "#111827"]].forEach(function (m) {
    var mk = el("marker", { id: m[0], viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "11",
                            markerHeight: "11", markerUnits: "userSpaceOnUse", orient: "auto" }, defs);
    el("path", { d: "M0,0 L10,5 L0,10 z", fill: m[1] }, mk);
  });
  var viewport = el("g", { id: "viewport" }, svg);

  // y axis: F per input on a log scale (lower = fitter)
  var axis = el("g", { "class": "axis" }, viewport);
  el("line", { x1: AX, x2: AX, y1: M.top - 30, y2: H - M.bottom + 30 }, axis);
  var lo = Math.ceil(ymin * 2) / 2, hi = Math.floor(ymax * 2) / 2;
  var step = (hi - lo) > 4 ? 1 : 0.5;
  for (var t = lo; t <= hi + 1e-9; t += step) {
    el("line", { x1: AX - 4, x2: W - 20, y1: py(t), y2: py(t), "class": "grid" }, axis);
    el("text", { x: AX - 8, y: py(t) + 4, "text-anchor": "end" }, axis, String(Number(Math.pow(10, t).toPrecision(3))));
  }
  el("text", { x: 18, y: (M.top + H - M.bottom) / 2, transform: "rotate(-90 18 " + (M.top + H - M.bottom) / 2 + ")",
               "text-anchor": "middle", "class": "axis-title" }, axis, "F_test per input (log; lower = fitter)");
  el("text", { x: (AX + W) / 2, y: H - 10, "text-anchor": "middle", "class": "axis-title" }, axis,
     "nodes in order of first visit →");

  // edges
  var edgeLayer = el("g", { id: "edges" }, viewport);
  var edgeEls = {};
  G.edges.forEach(function (e) {
    var a = byId[e.source], b = byId[e.target];
    if (!a || !b) return;
    var dx = b.px - a.px, dy = b.py - a.py, len = Math.sqrt(dx * dx + dy * dy) || 1;
    var ux = dx / len, uy = dy / len, bend = 0.18 * len;
    var cx = (a.px + b.px) / 2 + uy * bend, cy = (a.py + b.py) / 2 - ux * bend;
    function towards(n, tx, ty, r) {
      var vx = tx - n.px, vy = ty - n.py, l = Math.sqrt(vx * vx + vy * vy) || 1;
      return [n.px + vx / l * r, n.py + vy / l * r];
    }
    var s = towards(a, cx, cy, a.r + 2), d = towards(b, cx, cy, b.r + 4);
    var g = el("g", { "class": "edge", "data-source": e.source, "data-target": e.target }, edgeLayer);
    var w = 1.5 + 5 * (e.count || 1) / maxCount;
    el("path", { d: "M" + s[0] + "," + s[1] + " Q" + cx + "," + cy + " " + d[0] + "," + d[1],
                 "stroke-width": w, "marker-end": "url(#arrow)", fill: "none" }, g);
    el("path", { d: "M" + s[0] + "," + s[1] + " Q" + cx + "," + cy + " " + d[0] + "," + d[1],
                 "class": "hit", fill: "none" }, g);
    var mx = 0.25 * s[0] + 0.5 * cx + 0.25 * d[0], my = 0.25 * s[1] + 0.5 * cy + 0.25 * d[1];
    el("text", { x: mx, y: my - 6, "class": "edge-count", "text-anchor": "middle" }, g, "×" + fmt(e.count));
    el("text", { x: mx, y: my + 14, "class": "edge-order", "text-anchor": "middle" }, g, "");
    g.addEventListener("mouseenter", function (ev) { showTip(ev, edgeTip(e)); });
    g.addEventListener("mousemove", moveTip);
    g.addEventListener("mouseleave", hideTip);
    edgeEls[e.source + "\u0000" + e.target] = g;
  });

  // nodes
  var nodeLayer = el("g", { id: "nodes" }, viewport);
  var nodeEls = {};
  G.nodes.forEach(function (n) {
    var g = el("g", { "class": "node", "data-id": n.id, transform: "translate(" + n.px + "," + n.py + ")",
                      tabindex: "0" }, nodeLayer);
    el("circle", { r: n.r, fill: n.color }, g);
    el("text", { "class": "node-id", "text-anchor": "middle", dy: "0.35em" }, g, truncate(n.id, 6));
    el("text", { "class": "node-label", "text-anchor": "middle", y: n.r + 16 }, g, truncate(n.label, 34));
    el("text", { "class": "node-f", "text-anchor": "middle", y: n.r + 30 }, g,
       n.F === null || n.F === undefined ? "" : "F = " + fmt(n.F));
    g.addEventListener("mouseenter", function (ev) { showTip(ev, nodeTip(n)); });
    g.addEventListener("mousemove", moveTip);
    g.addEventListener("mouseleave", hideTip);
    g.addEventListener("focus", function () {
      var r = g.getBoundingClientRect(); showTip({ clientX: r.right, clientY: r.top }, nodeTip(n));
    });
    g.addEventListener("blur", hideTip);
    g.addEventListener("click", function (ev) { ev.stopPropagation(); selectNode(n); });
    g.addEventListener("keydown", function (ev) { if (ev.key === "Enter" || ev.key === " ") selectNode(n); });
    nodeEls[n.id] = g;
  });

  // ---- tooltip -----------------------------------------------------------------------------------------
  var tip = document.getElementById("tooltip");
  function nodeTip(n) {
    var rows = [["node", n.id], ["F_test per input", fmt(n.F)], ["F_train per input", fmt(n.F_train)],
                ["train / test acc", fmt(n.train_acc) + " / " + fmt(n.test_acc)], ["visits", fmt(n.visits)],
                ["members (" + n.members.length + ")", truncate(n.members.join(", "), 220)],
                ["concepts", n.concepts.length ? truncate(n.concepts.join(", "), 220) : "none"],
                ["runs", n.runs.join(", ")]];
    return { title: n.label, rows: rows };
  }
  function edgeTip(e) {
    return { title: e.source + " → " + e.target,
             rows: [["transitions", fmt(e.count)], ["jump probability", fmt(e.jump_probability)],
                    ["first at step", fmt(e.first_step)], ["ΔF_test", fmt(e.delta_F)], ["runs", e.runs.join(", ")]] };
  }
  function showTip(ev, content) {
    tip.textContent = "";
    html("div", "tip-title", tip, content.title);
    var dl = html("dl", "", tip);
    content.rows.forEach(function (r) { html("dt", "", dl, r[0]); html("dd", "", dl, r[1]); });
    tip.hidden = false;
    moveTip(ev);
  }
  function moveTip(ev) {
    var box = host.getBoundingClientRect();
    var x = ev.clientX - box.left + 14, y = ev.clientY - box.top + 14;
    if (x + tip.offsetWidth > box.width) x = Math.max(0, ev.clientX - box.left - tip.offsetWidth - 14);
    tip.style.left = x + "px"; tip.style.top = y + "px";
  }
  function hideTip() { tip.hidden = true; }

  // ---- highlight a run's path -------------------------------------------------------------------------
  var runBox = document.getElementById("runs");
  var status = document.getElementById("path-status");
  var runButtons = {};
  Object.keys(data.paths).forEach(function (run) {
    var b = html("button", "run-chip", runBox, run);
    b.type = "button";
    b.setAttribute("data-run", run);
    b.addEventListener("click", function () { highlightRun(run); });
    runButtons[run] = b;
  });
  var clear = html("button", "run-chip clear", runBox, "clear");
  clear.type = "button";
  clear.addEventListener("click", clearHighlight);

  function clearHighlight() {
    svg.classList.remove("highlighting");
    Object.keys(nodeEls).forEach(function (k) { nodeEls[k].classList.remove("on", "selected"); });
    Object.keys(edgeEls).forEach(function (k) {
      edgeEls[k].classList.remove("on");
      edgeEls[k].querySelector("path").setAttribute("marker-end", "url(#arrow)");
      edgeEls[k].querySelector(".edge-order").textContent = "";
    });
    Object.keys(runButtons).forEach(function (k) { runButtons[k].classList.remove("active"); });
    status.textContent = "Click a node or a run to highlight its path.";
  }
  function highlightRun(run, selected) {
    clearHighlight();
    var path = data.paths[run] || [];
    svg.classList.add("highlighting");
    runButtons[run].classList.add("active");
    path.forEach(function (id) { if (nodeEls[id]) nodeEls[id].classList.add("on"); });
    if (selected && nodeEls[selected]) nodeEls[selected].classList.add("selected");
    var order = {};
    for (var i = 0; i + 1 < path.length; i++) {
      var key = path[i] + "\u0000" + path[i + 1], g = edgeEls[key];
      if (!g) continue;
      g.classList.add("on");
      g.querySelector("path").setAttribute("marker-end", "url(#arrow-on)");
      (order[key] = order[key] || []).push(i + 1);
      g.querySelector(".edge-order").textContent = "#" + order[key].join(", #");
    }
    status.textContent = "run " + run + ": " + path.join(" → ");
  }
  function selectNode(n) {
    var runs = Object.keys(data.paths).filter(function (r) { return data.paths[r].indexOf(n.id) >= 0; });
    if (!runs.length) { clearHighlight(); return; }
    var current = runs.indexOf(svg.getAttribute("data-run"));
    var run = runs[(current + 1) % runs.length];     // clicking again cycles through the node's runs
    svg.setAttribute("data-run", run);
    highlightRun(run, n.id);
  }
  svg.addEventListener("click", function (ev) { if (!dragged) clearHighlight(); });

  // ---- pan and zoom -----------------------------------------------------------------------------------
  var view = { k: 1, x: 0, y: 0 }, drag = null, dragged = false;
  function apply() { viewport.setAttribute("transform", "translate(" + view.x + "," + view.y + ") scale(" + view.k + ")"); }
  function svgPoint(ev) {
    var p = svg.createSVGPoint(); p.x = ev.clientX; p.y = ev.clientY;
    return p.matrixTransform(svg.getScreenCTM().inverse());
  }
  function zoomAt(factor, cx, cy) {
    var k = Math.min(8, Math.max(0.25, view.k * factor));
    view.x = cx - (cx - view.x) * k / view.k; view.y = cy - (cy - view.y) * k / view.k; view.k = k; apply();
  }
  svg.addEventListener("wheel", function (ev) {
    ev.preventDefault();
    var p = svgPoint(ev); zoomAt(Math.exp(-ev.deltaY * 0.0015), p.x, p.y);
  }, { passive: false });
  svg.addEventListener("pointerdown", function (ev) {
    if (ev.button !== 0) return;
    var p = svgPoint(ev); drag = { x: p.x, y: p.y, vx: view.x, vy: view.y }; dragged = false;
  });
  window.addEventListener("pointermove", function (ev) {
    if (!drag) return;
    var p = svgPoint(ev), dx = p.x - drag.x, dy = p.y - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 3) { dragged = true; svg.classList.add("panning"); }
    if (dragged) { view.x = drag.vx + dx; view.y = drag.vy + dy; apply(); }
  });
  window.addEventListener("pointerup", function () {
    drag = null; svg.classList.remove("panning");
    setTimeout(function () { dragged = false; }, 0);
  });
  document.getElementById("zoom-in").addEventListener("click", function () { zoomAt(1.25, W / 2, H / 2); });
  document.getElementById("zoom-out").addEventListener("click", function () { zoomAt(0.8, W / 2, H / 2); });
  document.getElementById("zoom-reset").addEventListener("click", function () { view = { k: 1, x: 0, y: 0 }; apply(); });
  apply();
  clearHighlight();

  // ---- sortable tables --------------------------------------------------------------------------------
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.addEventListener("click", function () {
        var asc = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(table.tHead.rows[0].cells, function (c) { c.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        var rows = Array.prototype.slice.call(table.tBodies[0].rows);
        rows.sort(function (a, b) {
          var x = a.cells[col].getAttribute("data-v"), y = b.cells[col].getAttribute("data-v");
          var nx = parseFloat(x), ny = parseFloat(y), r;
          if (!isNaN(nx) && !isNaN(ny)) r = nx - ny; else r = String(x).localeCompare(String(y));
          return asc ? r : -r;
        });
        rows.forEach(function (r) { table.tBodies[0].appendChild(r); });
      });
    });
  });
  document.documentElement.setAttribute("data-ready", "1");
})();
