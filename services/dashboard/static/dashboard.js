// avwap dashboard: charts (uPlot) and the background refresh of the page's content block.
(function () {
  "use strict";
  const COLORS = ["#1565c0", "#ef6c00", "#2e7d32", "#6a1b9a", "#00838f", "#ad1457"];
  const ts = (dates) => dates.map((d) => Date.parse(d + "T16:00:00Z") / 1000);

  function chart(el, title, series, data, height) {
    el.innerHTML = "";
    const width = Math.max(320, el.clientWidth || 900);
    const day = (u, splits) => splits.map((v) => new Date(v * 1000).toISOString().slice(0, 10));
    const axes = [{ values: day, space: 90 }, { size: 70 }];
    return new uPlot({ title, width, height: height || 240, series: [{ value: (u, v) => v == null ? "-" : new Date(v * 1000).toISOString().slice(0, 10) }].concat(series),
      axes, scales: { x: { time: true } } }, data, el);
  }

  function drawHistory() {
    const src = document.getElementById("history-data");
    if (!src) return;
    const s = JSON.parse(src.textContent), x = ts(s.dates);
    const eq = document.getElementById("chart-equity");
    if (eq && x.length) chart(eq, "Equity vs benchmark", [
      { label: "equity", stroke: COLORS[0], width: 2 }, { label: "benchmark", stroke: COLORS[1] }],
      [x, s.equity, s.benchmark], 280);
    const dd = document.getElementById("chart-drawdown");
    if (dd && x.length) chart(dd, "Drawdown %", [{ label: "drawdown %", stroke: "#c62828", fill: "rgba(198,40,40,0.15)" }], [x, s.drawdown]);
    const ex = document.getElementById("chart-exposure");
    if (ex && x.length) chart(ex, "Gross exposure % of equity", [{ label: "exposure %", stroke: COLORS[2] }], [x, s.exposure]);
  }

  function drawSymbol() {
    const src = document.getElementById("symbol-data");
    const el = document.getElementById("chart-symbol");
    if (!src || !el) return;
    const c = JSON.parse(src.textContent), x = ts(c.dates);
    if (!x.length) { el.textContent = "no bars in the bar store"; return; }
    const series = [{ label: "close", stroke: "#263238", width: 2 }, { label: "high", stroke: "#b0bec5" }, { label: "low", stroke: "#b0bec5" }];
    const data = [x, c.close, c.high, c.low];
    let i = 0;
    for (const [label, line] of Object.entries(c.avwaps)) { series.push({ label: "AVWAP " + label, stroke: COLORS[i++ % COLORS.length], width: 1.5 }); data.push(line); }
    for (const [label, level] of Object.entries(c.levels)) {
      series.push({ label, stroke: label.includes("stop") ? "#c62828" : "#2e7d32", dash: [6, 4] }); data.push(x.map(() => level));
    }
    chart(el, "Daily bars, AVWAPs, entry and stop", series, data, 380);
  }

  function draw() { drawHistory(); drawSymbol(); }

  async function refresh() {
    const live = document.getElementById("live"), focused = document.activeElement;
    if (focused && focused !== document.body && live.contains(focused) && focused.tagName !== "A") return; // typing in a filter
    const url = new URL(window.location.href);
    url.searchParams.set("fragment", "1");
    try {
      const resp = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      const hash = resp.headers.get("X-Fragment-Hash");
      if (hash !== live.dataset.hash) { live.innerHTML = await resp.text(); live.dataset.hash = hash; draw(); }
      document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    } catch (e) {
      document.getElementById("updated").textContent = "refresh failed: " + e.message;
    }
  }

  draw();
  const every = parseInt(document.body.dataset.refreshMs || "5000", 10);
  setInterval(refresh, every);
})();
