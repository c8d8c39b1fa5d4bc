// The compare page's training curves: asks the page's curves endpoint (data-api) for
// each run's per-epoch history and draws one uPlot chart per metric, one series per
// run. Runs are labelled by letter (A, B, …, as the page's columns are); metric names
// come from data and are set as text (the chart's caption), never as HTML or as uPlot
// labels.
"use strict";

(function () {
  const holder = document.getElementById("compare-curves");
  const empty = document.getElementById("curves-empty");
  const failure = document.getElementById("curves-error");
  if (!holder || typeof uPlot === "undefined") {
    return;
  }
  const COLORS = ["#1d3557", "#b3261e", "#1b7a3a", "#a15c00", "#6a1b9a", "#00838f"];

  function fail(text) {
    failure.textContent = text;
    failure.hidden = false;
  }

  function chart(curves, entry) {
    const figure = document.createElement("figure");
    figure.className = "compare-chart";
    figure.dataset.metric = entry.metric;
    figure.dataset.series = String(entry.series.length);
    const caption = document.createElement("figcaption");
    caption.textContent = entry.label;
    figure.appendChild(caption);
    const area = document.createElement("div");
    figure.appendChild(area);
    holder.appendChild(figure);
    const series = [{ label: "epoch" }].concat(
      curves.runs.map(function (run, index) {
        return {
          label: run.letter,
          stroke: COLORS[index % COLORS.length],
          width: 2,
          points: { show: true, size: 5 },
          spanGaps: false,
        };
      }),
    );
    new uPlot(
      {
        width: 560,
        height: 220,
        scales: { x: { time: false } },
        series: series,
        // whole epochs only on the x axis
        axes: [{ label: "epoch", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] }, {}],
      },
      [curves.epochs].concat(entry.series),
      area,
    );
  }

  async function load() {
    try {
      const answer = await fetch(holder.dataset.api, { credentials: "same-origin", cache: "no-store" });
      if (!answer.ok) {
        fail("the curves could not be read (HTTP " + answer.status + ")");
        return;
      }
      const curves = await answer.json();
      empty.hidden = curves.charts.length > 0;
      curves.charts.forEach(function (entry) {
        chart(curves, entry);
      });
      holder.dataset.charts = String(curves.charts.length);
    } catch (error) {
      fail("the console did not answer; reload the page");
    }
  }

  load();
})();
