// Draws the overview's charts from the JSON the server rendered into #chart-data, with the
// vendored Chart.js (window.Chart). No network access: everything comes from this origin.
// Each chart holds one unit (a credit type, or a currency): its y axis is titled with it.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("chart-data").textContent);
  const palette = ["#2f6fde", "#e8833a", "#1a9e77", "#c2410c", "#7c3aed", "#0891b2",
                   "#be185d", "#65a30d", "#a16207", "#475569"];
  const color = (i) => palette[i % palette.length];

  // Digits after the point of a currency (2 for usd, 0 for jpy): amounts arrive in minor units.
  function exponent(currency) {
    try {
      return new Intl.NumberFormat("en", { style: "currency", currency: currency.toUpperCase() })
        .resolvedOptions().maximumFractionDigits;
    } catch (e) {
      return 2;
    }
  }

  function draw(canvas, chart, kind, stacked, scale, axisTitle) {
    new Chart(canvas, {
      type: kind,
      data: {
        labels: chart.labels,
        datasets: chart.series.map((s, i) => ({
          label: s.name,
          data: s.values.map((v) => v / scale),
          backgroundColor: color(i),
          borderColor: color(i),
          fill: false,
          tension: 0.2,
        })),
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        plugins: { legend: { display: chart.series.length > 1 } },
        scales: {
          x: { stacked: stacked, ticks: { maxRotation: 0, autoSkipPadding: 12 } },
          y: { stacked: stacked, beginAtZero: true, title: { display: true, text: axisTitle } },
        },
      },
    });
  }

  // Canvases carry data-index into their list of charts (usage, revenue or liability).
  document.querySelectorAll("canvas.chart-usage").forEach((canvas) => {
    const chart = data.usage[Number(canvas.dataset.index)];
    draw(canvas, chart, "bar", true, 1, chart.unit);
  });
  document.querySelectorAll("canvas.chart-liability").forEach((canvas) => {
    const chart = data.liability[Number(canvas.dataset.index)];
    draw(canvas, chart, "line", false, 1, chart.unit);
  });
  document.querySelectorAll("canvas.chart-revenue").forEach((canvas) => {
    const chart = data.revenue[Number(canvas.dataset.index)];
    draw(canvas, chart, "bar", false, Math.pow(10, exponent(chart.unit)), chart.unit.toUpperCase());
  });
})();
