// darkd status page: polls GET /api/v1/status and draws it (plain SVG, no libraries).
// A token can be given once as status.html#token=XYZ; it is kept in sessionStorage and sent as a bearer token.
"use strict";
const HOURS = 6;
const POLL_MS = 5000;
const SVG = "http://www.w3.org/2000/svg";

(function takeToken() {
  const m = /token=([^&]+)/.exec(location.hash);
  if (m) { sessionStorage.setItem("darkd-token", decodeURIComponent(m[1])); history.replaceState(null, "", location.pathname); }
})();

function headers() {
  const t = sessionStorage.getItem("darkd-token");
  return t ? { Authorization: "Bearer " + t } : {};
}

function fmt(v, digits, unit) { return v === null || v === undefined ? "–" : Number(v).toFixed(digits) + (unit || ""); }

function el(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function niceRange(lo, hi, minSpan) {
  if (!isFinite(lo) || !isFinite(hi)) return [0, 1];
  if (hi - lo < minSpan) { const mid = (hi + lo) / 2; lo = mid - minSpan / 2; hi = mid + minSpan / 2; }
  const pad = (hi - lo) * 0.08;
  return [Math.floor(lo - pad), Math.ceil(hi + pad)];
}

function drawChart(svg, samples, serverTime) {
  svg.replaceChildren();
  const W = 1000, H = 300, L = 50, R = 45, T = 10, B = 25;
  const end = Date.parse(serverTime), start = end - HOURS * 3600e3;
  const pts = samples.map(s => ({ t: Date.parse(s.time), temp: s.temperature_c, set: s.set_point_c, pow: s.cooler_power_pct }));
  const temps = pts.flatMap(p => [p.temp, p.set]).filter(v => v !== null);
  const [tlo, thi] = niceRange(Math.min(...temps), Math.max(...temps), 4);
  const x = t => L + (t - start) / (end - start) * (W - L - R);
  const yT = v => T + (thi - v) / (thi - tlo) * (H - T - B);
  const yP = v => T + (100 - v) / 100 * (H - T - B);
  for (let i = 0; i <= 4; i++) {
    const v = tlo + (thi - tlo) * i / 4, y = yT(v);
    svg.append(el("line", { x1: L, x2: W - R, y1: y, y2: y, class: "grid" }));
    svg.append(el("text", { x: L - 6, y: y + 4, "text-anchor": "end" }, v.toFixed(1)));
    svg.append(el("text", { x: W - R + 6, y: yP(25 * i) + 4 }, (25 * i) + "%"));
  }
  for (let h = 0; h <= HOURS; h++) {
    const t = start + h * 3600e3, xx = x(t);
    svg.append(el("line", { x1: xx, x2: xx, y1: T, y2: H - B, class: "grid" }));
    svg.append(el("text", { x: xx, y: H - 6, "text-anchor": "middle" },
      h === HOURS ? "now" : "-" + (HOURS - h) + " h"));
  }
  const path = (key, y) => {
    let d = "";
    for (const p of pts) if (p[key] !== null) d += (d ? " L" : "M") + x(p.t).toFixed(1) + " " + y(p[key]).toFixed(1);
    return d;
  };
  if (pts.length) {
    svg.append(el("path", { d: path("pow", yP), class: "power" }));
    svg.append(el("path", { d: path("set", yT), class: "setpoint" }));
    svg.append(el("path", { d: path("temp", yT), class: "temp" }));
  } else {
    svg.append(el("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no temperature readings yet"));
  }
}

function showCharts(body) {
  // one chart per configured camera (each from its own ring buffer); a single camera keeps the plain layout
  const cameras = body.cameras || [];
  const histories = body.histories || {};
  const charts = cameras.length > 1
    ? cameras.map(c => ({ id: c.id, label: `${c.id} · ${c.device || c.indi_device || "–"}`, samples: histories[c.id] || [] }))
    : [{ id: (cameras[0] || {}).id || "", label: "", samples: body.samples }];
  const box = document.getElementById("charts");
  box.replaceChildren(...charts.map((c, i) => {
    const figure = document.createElement("figure");
    figure.className = "chart";
    figure.dataset.camera = c.id;
    const caption = document.createElement("figcaption");
    caption.textContent = c.label ? `${c.label} (${c.samples.length} readings)` : "";
    caption.hidden = !c.label;
    const svg = el("svg", { id: i === 0 ? "chart" : "chart-" + c.id, class: "chart", viewBox: "0 0 1000 300",
      preserveAspectRatio: "none", role: "img", "aria-label": `sensor temperature and cooler power over time ${c.id}`.trim() });
    drawChart(svg, c.samples, body.server_time);
    figure.append(caption, svg);
    return figure;
  }));
  document.getElementById("chart-range").textContent = charts.length > 1
    ? `(last ${HOURS} h, ${charts.length} cameras)` : `(last ${HOURS} h, ${charts[0].samples.length} readings)`;
}

function showCamera(c) {
  const line = c.connected
    ? `${c.device}: ${fmt(c.temperature_c, 2, " °C")} → ${fmt(c.set_point_c, 1, " °C")}, cooler ${fmt(c.cooler_power_pct, 0, " %")}` +
      (c.stable ? ", stable" : "") + (c.exposing ? ", exposing" : "")
    : "camera not connected" + (c.last_error ? ": " + c.last_error : "");
  document.getElementById("camera-line").textContent = line;
  const rows = [["connected", c.connected ? "yes" : "no"], ["device", c.device || "–"],
    ["temperature", fmt(c.temperature_c, 2, " °C")], ["set point", fmt(c.set_point_c, 1, " °C")],
    ["stable", c.stable ? "yes" : "no"], ["cooler power", fmt(c.cooler_power_pct, 0, " %")],
    ["gain / offset", `${fmt(c.gain, 0)} / ${fmt(c.offset, 0)}`], ["binning", c.binning ?? "–"],
    ["read mode", c.read_mode ?? "–"], ["overscan", c.overscan ?? "–"],
    ["exposing", c.exposing ? `yes (${fmt(c.exposure_remaining_s, 1, " s")} left)` : "no"]];
  const table = document.getElementById("camera");
  table.replaceChildren(...rows.map(([k, v]) => {
    const tr = document.createElement("tr");
    tr.innerHTML = "<td></td><td></td>";
    tr.children[0].textContent = k; tr.children[1].textContent = v;
    return tr;
  }));
}

function showCameras(cameras) {
  // one row per configured camera; shown only when there are several (the card above is the first one)
  document.getElementById("cameras-card").hidden = cameras.length < 2;
  const body = document.querySelector("#cameras tbody");
  body.replaceChildren(...cameras.map(c => {
    const tr = document.createElement("tr");
    tr.dataset.camera = c.id || "";
    const cells = [c.id || "–", c.device || c.indi_device || "–", c.connected ? "yes" : "no",
      fmt(c.temperature_c, 2, " °C"), fmt(c.set_point_c, 1, " °C"), fmt(c.cooler_power_pct, 0, " %"),
      c.last_error || ""];
    for (const v of cells) { const td = document.createElement("td"); td.textContent = v; tr.append(td); }
    if (c.last_error) tr.className = "error";
    return tr;
  }));
}

function showJob(job) {
  const box = document.getElementById("job");
  if (!job) { box.className = "muted"; box.textContent = "no job running"; return; }
  box.className = "";
  const pct = job.progress_total ? Math.min(100, 100 * job.progress_done / job.progress_total) : 0;
  const eta = job.eta_s !== null && job.eta_s !== undefined ? `, ETA ${Math.round(job.eta_s / 60)} min` : "";
  box.innerHTML = '<div class="title"></div><div class="bar"><div></div></div><div class="muted step"></div>';
  box.querySelector(".title").textContent = `#${job.id} ${job.kind} — ${job.state}`;
  box.querySelector(".bar > div").style.width = pct.toFixed(1) + "%";
  box.querySelector(".step").textContent =
    `${job.progress_done}/${job.progress_total} frames (${pct.toFixed(0)} %)${eta}` + (job.step ? " · " + job.step : "");
}

function showCoverage(rows, counts) {
  const body = document.querySelector("#coverage tbody");
  body.replaceChildren(...rows.map(r => {
    const tr = document.createElement("tr");
    const cells = [r.camera || "", r.kind, r.kind === "bias" ? "–" : r.exposure_s + " s", r.set_point_c + " °C", null,
      `${r.frames}/${r.frames_target}`, r.slug];
    for (const c of cells) {
      const td = document.createElement("td");
      if (c === null) { const b = document.createElement("span"); b.className = "badge " + r.status; b.textContent = r.status; td.append(b); }
      else td.textContent = c;
      tr.append(td);
    }
    return tr;
  }));
  if (!rows.length) body.innerHTML = '<tr><td colspan="7" class="muted">the library is empty and no plan was made yet</td></tr>';
  document.getElementById("counts").textContent = "(" + Object.entries(counts).filter(([, n]) => n).map(([k, n]) => `${n} ${k}`).join(", ") + ")";
}

async function refresh() {
  const err = document.getElementById("error");
  try {
    const r = await fetch(`/api/v1/status?hours=${HOURS}`, { headers: headers() });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error ? `${body.error.code}: ${body.error.message}` : r.statusText);
    showCharts(body);
    showCamera(body.camera);
    document.getElementById("camera-name").textContent = (body.cameras || []).length > 1 ? body.camera.id : "";
    showCameras(body.cameras || []);
    showJob(body.current_job);
    showCoverage(body.coverage, body.counts);
    document.getElementById("updated").textContent = "updated " + new Date(body.server_time).toLocaleTimeString();
    err.hidden = true;
  } catch (e) {
    err.hidden = false;
    err.textContent = "cannot load status: " + e.message;
  }
}

refresh();
setInterval(refresh, POLL_MS);
