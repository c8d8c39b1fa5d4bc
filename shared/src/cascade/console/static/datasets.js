// The dataset page's drift chart: asks the page's drift endpoint (data-api) for one
// feature's drift per accepted file and draws it with uPlot (vendored, static/vendor).
// Feature names come from data: they are set as text (option.textContent, the caption),
// never parsed as HTML, and never given to uPlot as labels.
"use strict";

(function () {
  const chart = document.getElementById("drift-chart");
  const select = document.getElementById("drift-feature-select");
  const caption = document.getElementById("drift-feature");
  const measure = document.getElementById("drift-measure");
  const empty = document.getElementById("drift-empty");
  const failure = document.getElementById("drift-error");
  if (!chart || !select || typeof uPlot === "undefined") {
    return;
  }
  const api = chart.dataset.api;
  let plot = null;

  function url(feature) {
    const target = new URL(api, window.location.origin);
    if (feature !== null) {
      target.searchParams.set("feature", feature);
    }
    return target.pathname + target.search;
  }

  function fillSelect(features, chosen) {
    select.replaceChildren(
      ...features.map(function (name) {
        const option = document.createElement("option");
        option.value = name;
        option.textContent = name;
        option.selected = name === chosen;
        return option;
      }),
    );
    select.disabled = features.length === 0;
  }

  function draw(series) {
    if (plot !== null) {
      plot.destroy();
      plot = null;
    }
    const points = series.points;
    caption.textContent = series.feature === null ? "" : series.feature;
    measure.textContent = series.measure ? "(" + series.measure + ")" : "";
    empty.hidden = points.length > 0;
    chart.dataset.points = String(points.length);
    chart.dataset.feature = series.feature === null ? "" : series.feature;
    if (points.length === 0) {
      return;
    }
    const first = points[0].t;
    const single = points.every(function (p) { return p.t === first; });
    const data = [
      points.map(function (p) { return p.t; }),
      points.map(function (p) { return p.value; }),
      points.map(function (p) { return p.threshold; }),
    ];
    plot = new uPlot(
      {
        width: Math.min(chart.clientWidth || 800, 960),
        height: 260,
        // one file: an hour either side of it, not uPlot's default span of years
        scales: { x: single ? { time: true, auto: false, range: [first - 3600, first + 3600] } : { time: true } },
        series: [
          { label: "accepted" },
          { label: "drift", stroke: "#b3261e", width: 2, points: { show: true, size: 6 } },
          { label: "threshold", stroke: "#1d3557", dash: [6, 4], width: 1 },
        ],
        axes: [{}, { label: "distance to the baseline" }],
      },
      data,
      chart,
    );
  }

  async function load(feature) {
    failure.hidden = true;
    try {
      const answer = await fetch(url(feature), { credentials: "same-origin", cache: "no-store" });
      const series = await answer.json();
      if (!answer.ok) {
        failure.textContent = series.error || "the drift could not be read";
        failure.hidden = false;
        return;
      }
      fillSelect(series.features, series.feature);
      draw(series);
      chart.dataset.loaded = String(Date.now());
    } catch (error) {
      failure.textContent = "the console did not answer; reload the page";
      failure.hidden = false;
    }
  }

  select.addEventListener("change", function () {
    load(select.value);
  });
  load(null);
})();
