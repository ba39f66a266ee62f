// workspaces-jobs web view: the only script (no build step, no inline script).
// "Select all" ticks every job on the page; everything else works without JavaScript.
document.addEventListener("DOMContentLoaded", () => {
  const all = document.getElementById("select-all");
  if (!all) return;
  const boxes = () => document.querySelectorAll('#jobs-form input[type=checkbox][name=job]');
  all.addEventListener("change", () => boxes().forEach((b) => { b.checked = all.checked; }));
});
