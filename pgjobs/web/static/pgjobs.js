// pgjobs dashboard: charts (uPlot), confirmations, and when a page may refresh itself.
"use strict";

// A page refreshes its live part unless the person is busy with it: a box ticked for a
// bulk action, a field being edited, or text selected.
function pgjobsMayRefresh() {
  if (document.querySelector("#live input[type=checkbox]:checked")) return false;
  const active = document.activeElement;
  if (active && active.closest && active.closest("#live") && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName)) return false;
  const selection = window.getSelection && window.getSelection();
  return !(selection && selection.toString());
}
document.addEventListener("htmx:beforeRequest", (event) => {
  if (event.detail.elt.id === "live" && !pgjobsMayRefresh()) event.preventDefault();
});

function drawCharts(root) {
  if (typeof uPlot === "undefined") return;
  root.querySelectorAll(".plot[data-series]").forEach((element) => {
    if (element.dataset.drawn) return;
    element.dataset.drawn = "1";
    const data = JSON.parse(element.dataset.series);
    const style = getComputedStyle(document.documentElement);
    const ok = style.getPropertyValue("--ok").trim(), bad = style.getPropertyValue("--bad").trim();
    const bars = uPlot.paths.bars({ size: [0.8, 40] });
    new uPlot({
      width: Math.max(element.clientWidth, 300), height: 200,
      series: [{}, { label: "completed", stroke: ok, fill: ok + "66", paths: bars },
                   { label: "failed", stroke: bad, fill: bad + "66", paths: bars }],
      axes: [{}, { size: 50 }],
      legend: { show: true },
    }, data, element);
  });
}

// Every action that changes something asks first, saying what it will do.
document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form.dataset && form.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});

document.addEventListener("DOMContentLoaded", () => drawCharts(document));
document.addEventListener("htmx:afterSettle", (event) => drawCharts(event.target));

// --- the jobs list (pages/jobs.py): the box in the table's head ticks every job of the page.
document.addEventListener("change", (event) => {
  const all = event.target;
  if (!all.matches || !all.matches("input[data-check-all]") || !all.form) return;
  all.form.querySelectorAll(`input[type=checkbox][name="${all.dataset.checkAll}"]`)
    .forEach((box) => { box.checked = all.checked; });
});
