// workspaces-jobs web view: the only script (no build step, no inline script).
// Everything works without JavaScript; this adds two conveniences:
// - "Select all" ticks every job on the page;
// - pages showing jobs that are not final reload every few seconds (<body data-refresh>),
//   but never while the user is typing, choosing or has ticked something.
document.addEventListener("DOMContentLoaded", () => {
  const all = document.getElementById("select-all");
  if (all) {
    const boxes = () => document.querySelectorAll("#jobs-form input[type=checkbox][name=job]");
    all.addEventListener("change", () => boxes().forEach((b) => { b.checked = all.checked; }));
  }
  const every = Number(document.body.dataset.refresh || 0);
  if (every > 0) {
    let touched = false;
    document.addEventListener("input", () => { touched = true; });
    document.addEventListener("change", () => { touched = true; });
    setInterval(() => {
      const active = document.activeElement;
      const busy = touched || (active && ["INPUT", "SELECT", "TEXTAREA"].includes(active.tagName));
      if (!busy) window.location.reload();
    }, every * 1000);
  }
});

// Live logs on a job's page: <section data-events="/jobs/ID/events?..."> streams the new
// lines (server-sent events), appended under their device and step in arrival order;
// the status badge, progress bar and estimate follow the job; the stream closes when the
// job has ended. No page reload. The lines' HTML comes escaped and coloured (CSS classes)
// from the server; everything else is set as text.
document.addEventListener("DOMContentLoaded", () => {
  const panel = document.getElementById("panel-logs");
  if (!panel || !panel.dataset.events || !window.EventSource) return;
  const groups = document.getElementById("log-groups");
  const seen = new Set(Array.from(panel.querySelectorAll("tr[data-id]"), (r) => r.dataset.id));
  const el = (tag, cls, text) => {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  };
  const findGroup = (device) => {
    for (const g of groups.querySelectorAll("details.log-group")) {
      if (g.dataset.device === device) return g;
    }
    const g = el("details", "log-group");
    g.open = true;
    g.dataset.device = device;
    const summary = el("summary", null, device ? "Device " : "Job");
    if (device) summary.appendChild(el("b", null, device));
    g.appendChild(summary);
    const empty = document.getElementById("no-lines");
    if (empty) empty.remove();
    groups.appendChild(g);
    return g;
  };
  const findBody = (device, step) => {
    const g = findGroup(device);
    for (const s of g.querySelectorAll("div.log-step")) {
      if (s.dataset.step === step) return s.querySelector("tbody");
    }
    const s = el("div", "log-step");
    s.dataset.step = step;
    if (device) s.appendChild(el("h3", null, step));
    const table = el("table", "log");
    const body = el("tbody");
    table.appendChild(body);
    s.appendChild(table);
    g.appendChild(s);
    return body;
  };
  const source = new EventSource(panel.dataset.events);
  source.addEventListener("line", (ev) => {
    const line = JSON.parse(ev.data);
    if (seen.has(line.id)) return;
    seen.add(line.id);
    const tr = el("tr", `lvl-${line.level.toLowerCase()} stream-${line.stream || "none"}`);
    tr.dataset.id = line.id;
    const ts = el("td", "ts");
    const time = el("time", null, line.time);
    time.setAttribute("datetime", line.ts);
    ts.appendChild(time);
    tr.append(ts, el("td", "lvl", line.level), el("td", "stream", line.stream));
    const msg = el("td", "msg");
    msg.innerHTML = line.html; // escaped by the server (markupsafe), classes only
    tr.appendChild(msg);
    findBody(line.device, line.step).appendChild(tr);
    if (line.error && !document.getElementById("first-error")) {
      tr.id = "first-error";
      const jump = document.getElementById("jump-error");
      if (jump) jump.hidden = false;
    }
  });
  source.addEventListener("status", (ev) => {
    const s = JSON.parse(ev.data);
    const badge = document.querySelector("#job-badge .status");
    if (badge) {
      badge.textContent = s.status;
      badge.className = `status s-${s.slug}`;
      badge.dataset.status = s.status;
    }
    const bar = document.querySelector("#job-bar progress");
    const pct = document.querySelector("#job-bar .pct");
    if (bar && s.progress !== null) {
      bar.value = s.progress;
      if (pct) pct.textContent = `${Math.round(s.progress)}%`;
    }
    const eta = document.getElementById("job-eta");
    if (eta) {
      eta.textContent = s.eta || "";
      eta.hidden = !s.eta;
    }
  });
  source.addEventListener("end", () => {
    source.close();
    const live = document.getElementById("live-state");
    if (live) live.textContent = "ended";
    panel.dataset.ended = "1";
  });
});
