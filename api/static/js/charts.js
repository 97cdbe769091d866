// Charts of the admin console, drawn with the vendored Chart.js (window.Chart, loaded by a
// classic <script> before the modules). Each canvas carries a text summary for screen readers.

export const KIND_COLOURS = {
  text: "#0072B2",
  image: "#E69F00",
  fusion: "#009E73",
  failed: "#D55E00",
  all: "#55555F",
  unknown: "#999999",
};
const SHADES = ["#9ecae1", "#4292c6", "#2166ac", "#08306b"]; // light to dark, for percentiles
const charts = new Map();

function library() {
  const Chart = globalThis.Chart;
  if (!Chart) throw new Error("The chart library did not load (/static/vendor/chart.js).");
  if (!library.configured) {
    Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    Chart.defaults.color = "#3a3a44";
    Chart.defaults.animation = false; // instant redraws, and nothing moves for reduced-motion users
    Chart.defaults.maintainAspectRatio = false;
    library.configured = true;
  }
  return Chart;
}

/** Draw (or redraw) the chart of a canvas; `summary` becomes its accessible label. */
export function draw(canvas, config, summary) {
  const Chart = library();
  charts.get(canvas)?.destroy();
  const figure = canvas.closest("figure");
  const empty = figure?.querySelector(".empty");
  const hasData = config.data.datasets.some((d) => d.data.length) && config.data.labels?.length !== 0;
  canvas.parentElement.hidden = !hasData;
  if (empty) empty.hidden = hasData;
  if (!hasData) {
    charts.delete(canvas);
    return null;
  }
  canvas.setAttribute("aria-label", summary);
  canvas.textContent = summary; // fallback content
  const chart = new Chart(canvas, config);
  charts.set(canvas, chart);
  return chart;
}

const percentAxis = {
  min: 0,
  max: 1,
  ticks: { callback: (value) => `${Math.round(value * 100)}%` },
};

function bucketLabel(date, seconds) {
  const options =
    seconds >= 86400
      ? { month: "short", day: "2-digit" }
      : seconds >= 3600
        ? { month: "short", day: "2-digit", hour: "2-digit", minute: "2-digit" }
        : { hour: "2-digit", minute: "2-digit" };
  return new Intl.DateTimeFormat("en-GB", options).format(date);
}

/** Stacked bars of requests per bucket and model kind; empty buckets are drawn as zero. */
export function trafficChart(canvas, stats) {
  const step = stats.bucket_seconds * 1000;
  const start = Math.floor(new Date(stats.since).getTime() / step) * step;
  const end = new Date(stats.until).getTime();
  const times = [];
  for (let t = start; t < end && times.length < 2000; t += step) times.push(t);
  const index = new Map(times.map((t, i) => [t, i]));
  const series = {};
  for (const point of stats.traffic) {
    const i = index.get(new Date(point.bucket_start).getTime());
    if (i === undefined) continue;
    series[point.series] ??= new Array(times.length).fill(0);
    series[point.series][i] += point.count;
  }
  const order = ["text", "image", "fusion", "failed"].filter((k) => k in series);
  const datasets = order.map((kind) => ({
    label: kind,
    data: series[kind],
    backgroundColor: KIND_COLOURS[kind],
    stack: "requests",
  }));
  const totals = order.map((k) => `${k} ${series[k].reduce((a, b) => a + b, 0)}`).join(", ");
  return draw(
    canvas,
    {
      type: "bar",
      data: { labels: stats.traffic.length ? times.map((t) => bucketLabel(new Date(t), stats.bucket_seconds)) : [], datasets },
      options: {
        scales: {
          x: { stacked: true, ticks: { maxRotation: 0, autoSkipPadding: 12 } },
          y: { stacked: true, beginAtZero: true, ticks: { precision: 0 }, title: { display: true, text: `requests per ${stats.bucket}` } },
        },
        plugins: { legend: { position: "bottom" } },
      },
    },
    `Requests per ${stats.bucket} by model: ${totals || "none"}.`,
  );
}

/** Grouped bars of p50/p90/p95/p99 latency per model kind. */
export function latencyChart(canvas, latency) {
  const labels = latency.map((l) => `${l.model_kind} (${l.count})`);
  const datasets = ["p50", "p90", "p95", "p99"].map((p, i) => ({
    label: p,
    data: latency.map((l) => l[`${p}_ms`]),
    backgroundColor: SHADES[i],
    maxBarThickness: 40,
  }));
  const summary = latency
    .map((l) => `${l.model_kind}: median ${Math.round(l.p50_ms)} ms, p95 ${Math.round(l.p95_ms)} ms`)
    .join("; ");
  return draw(
    canvas,
    {
      type: "bar",
      data: { labels, datasets: latency.length ? datasets : [] },
      options: {
        scales: { y: { beginAtZero: true, title: { display: true, text: "milliseconds" } } },
        plugins: { legend: { position: "bottom" } },
      },
    },
    `Latency percentiles. ${summary}.`,
  );
}

/** Horizontal bars: how often each category was the top prediction. */
export function classChart(canvas, classes) {
  const top = classes.slice(0, 27);
  const total = classes.reduce((sum, c) => sum + c.count, 0);
  // One readable row per category, however many there are.
  canvas.parentElement.style.height = `${Math.max(160, 26 * top.length + 60)}px`;
  return draw(
    canvas,
    {
      type: "bar",
      data: {
        labels: top.map((c) => c.category),
        datasets: top.length
          ? [{ label: "predictions", data: top.map((c) => c.count), backgroundColor: "#bf0000", maxBarThickness: 22 }]
          : [],
      },
      options: {
        indexAxis: "y",
        scales: { x: { beginAtZero: true, ticks: { precision: 0 } }, y: { ticks: { autoSkip: false } } },
        plugins: {
          legend: { display: false },
          tooltip: { callbacks: { footer: (items) => `${((items[0].raw / total) * 100).toFixed(1)}% of predictions` } },
        },
      },
    },
    `Top predicted categories: ${top
      .slice(0, 5)
      .map((c) => `${c.category} ${c.count}`)
      .join(", ")}.`,
  );
}

/** Grouped bars of top-1 and in-suggestion-set hit rates per model kind. */
export function hitChart(canvas, hitRate) {
  const rows = hitRate.filter((h) => h.confirmed > 0);
  const datasets = [
    { label: "top 1 correct", data: rows.map((h) => h.top1_rate), backgroundColor: "#0072B2", maxBarThickness: 48 },
    {
      label: "in the suggestion set",
      data: rows.map((h) => h.suggestion_rate),
      backgroundColor: "#009E73",
      maxBarThickness: 48,
    },
  ];
  return draw(
    canvas,
    {
      type: "bar",
      data: { labels: rows.map((h) => `${h.model_kind} (${h.confirmed})`), datasets: rows.length ? datasets : [] },
      options: {
        scales: { y: percentAxis },
        plugins: {
          legend: { position: "bottom" },
          tooltip: {
            callbacks: {
              label: (item) => `${item.dataset.label}: ${item.raw === null ? "n/a" : `${(item.raw * 100).toFixed(1)}%`}`,
            },
          },
        },
      },
    },
    `Hit rates on confirmed products. ${rows
      .map((h) => `${h.model_kind}: ${h.confirmed} confirmed, top 1 ${Math.round(h.top1_rate * 100)}%`)
      .join("; ")}.`,
  );
}

/** A histogram given bin labels and counts. */
export function histogramChart(canvas, labels, counts, summary) {
  return draw(
    canvas,
    {
      type: "bar",
      data: { labels, datasets: [{ label: "predictions", data: counts, backgroundColor: "#56B4E9", barPercentage: 1, categoryPercentage: 0.95 }] },
      options: { scales: { y: { beginAtZero: true } }, plugins: { legend: { display: false } } },
    },
    summary,
  );
}

/** Lines of a few figures across reports (oldest first); a series with `axis: "y2"` uses the right axis. */
export function trendChart(canvas, labels, series, summary) {
  const palette = ["#0072B2", "#D55E00", "#009E73", "#CC79A7"];
  const right = series.some((s) => s.axis === "y2");
  return draw(
    canvas,
    {
      type: "line",
      data: {
        labels,
        datasets: series.map((s, i) => ({
          label: s.label,
          data: s.values,
          yAxisID: s.axis || "y",
          borderColor: palette[i % palette.length],
          backgroundColor: palette[i % palette.length],
          borderDash: s.axis === "y2" ? [6, 4] : undefined,
          spanGaps: true,
        })),
      },
      options: {
        scales: {
          y: { ...percentAxis, title: { display: true, text: "rate" } },
          ...(right ? { y2: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false }, title: { display: true, text: "PSI" } } } : {}),
        },
        plugins: { legend: { position: "bottom" } },
      },
    },
    summary,
  );
}
