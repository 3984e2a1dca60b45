// The dashboard's only script (the Content-Security-Policy allows no inline script): draws
// the plotly figures kept as JSON data blocks, runs the devices page's live check and the
// tuning page's refresh. Every value shown is set as text, never as HTML, except the trials
// table the server renders (escaped by its template).
"use strict";

function drawFigures(root) {
  for (const block of root.querySelectorAll("script.plotly-figure")) {
    const spec = JSON.parse(block.textContent);
    const div = document.getElementById(block.dataset.for);
    if (div) Plotly.newPlot(div, spec.figure.data, spec.figure.layout, spec.config);
  }
}

function liveDevices(note) {
  fetch("/api/devices/live").then(r => r.json()).then(states => {
    for (const s of states) {
      for (const row of document.querySelectorAll("tr[data-device]")) {
        if (row.dataset.device !== s.name) continue;
        const cell = (cls) => row.querySelector("." + cls);
        cell("live-status").textContent = s.status;
        cell("live-status").className = "live-status " + (s.reachable ? "up" :
          (s.status.startsWith("down") ? "down" : "muted"));
        cell("live-id").textContent = s.device_id;
        cell("live-runtimes").textContent = s.runtimes.join(", ");
        cell("live-sensors").textContent = s.sensors.join(", ");
        cell("live-queue").textContent = s.queued_benchmarks === null ? "" : s.queued_benchmarks;
        cell("live-last").textContent = s.last_measurement;
      }
    }
    note.textContent = "(checked " + new Date().toISOString()
      .slice(0, 19).replace("T", " ") + " UTC)";
    document.body.dataset.live = "done";
  }).catch(err => {
    note.textContent = "(live check failed: " + err + ")";
    document.body.dataset.live = "failed";
  });
}

function refreshTuning(live) {
  const run = live.dataset.run;
  const note = document.getElementById("refresh-note");
  async function refresh() {
    try {
      const r = await fetch("/api/tuning/" + encodeURIComponent(run));
      if (!r.ok) return;
      const data = await r.json();
      document.getElementById("trial-count").textContent = data.trials;
      document.getElementById("budget").textContent =
        data.budget === null ? "none" : Number(data.budget.toPrecision(4));
      document.getElementById("trials-table").innerHTML = data.table_html;
      for (const [id, fig] of Object.entries(data.figures)) {
        Plotly.react(id, fig.data, fig.layout);
      }
      note.textContent = "refreshed " + new Date().toISOString().slice(11, 19) + " UTC";
      document.body.dataset.refreshed = String(data.trials);
    } catch (err) {
      note.textContent = "refresh failed: " + err;
    }
  }
  setInterval(refresh, Number(live.dataset.refreshMs));
}

drawFigures(document);
const liveNote = document.getElementById("live-note");
if (liveNote) liveDevices(liveNote);
const tuningLive = document.getElementById("tuning-live");
if (tuningLive) refreshTuning(tuningLive);
