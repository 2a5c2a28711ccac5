// payledger console: shows every <time datetime> in the viewer's own time zone (the server
// writes UTC). Pages work without it.
document.querySelectorAll("time[datetime]").forEach(function (el) {
  var d = new Date(el.getAttribute("datetime"));
  if (!isNaN(d)) {
    el.textContent = d.toLocaleString(document.documentElement.lang || undefined);
    el.title = el.getAttribute("datetime");
  }
});

// The overview's charts (uPlot, vendored): orders per day, paid orders per day per channel and
// volume per day per currency, from the page's own JSON. The tables above them hold the exact figures.
(function () {
  var data = document.getElementById("chart-data");
  if (!data || !window.uPlot) return;
  var d = JSON.parse(data.textContent);
  var width = Math.min(1100, document.querySelector("main").clientWidth - 20);
  var colours = ["#0b5cad", "#1e6b34", "#8a4b00", "#a4161a", "#5a32a3"];
  function draw(id, series) {
    var el = document.getElementById(id);
    if (!el) return;
    var opts = {
      width: width, height: 240,
      series: [{}].concat(series.map(function (s, i) {
        return { label: s.label, stroke: colours[i % colours.length], width: 2 };
      })),
      axes: [{}, {}],
    };
    new uPlot(opts, [d.days].concat(series.map(function (s) { return s.values; })), el);
  }
  draw("chart-orders", d.orders);
  draw("chart-channels", d.channels);
  draw("chart-volume", d.volume);
})();
