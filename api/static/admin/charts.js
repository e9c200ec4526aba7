// Draws the overview's charts from the JSON the server rendered into #chart-data, with the
// vendored Chart.js (window.Chart). No network access: everything comes from this origin.
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

  function draw(canvas, chart, kind, stacked, scale) {
    if (!canvas) return;
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
        scales: {
          x: { stacked: stacked },
          y: { stacked: stacked, beginAtZero: true,
               title: { display: true, text: scale === 1 ? chart.unit : chart.unit.toUpperCase() } },
        },
      },
    });
  }

  draw(document.getElementById("chart-usage"), data.usage, "bar", true, 1);
  draw(document.getElementById("chart-liability"), data.liability, "line", false, 1);
  document.querySelectorAll("canvas.chart-revenue").forEach((canvas) => {
    const chart = data.revenue[Number(canvas.dataset.index)];
    draw(canvas, chart, "bar", false, Math.pow(10, exponent(chart.unit)));
  });
})();
