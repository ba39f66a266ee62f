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
