// payledger console: shows every <time datetime> in the viewer's own time zone (the server
// writes UTC). Pages work without it.
document.querySelectorAll("time[datetime]").forEach(function (el) {
  var d = new Date(el.getAttribute("datetime"));
  if (!isNaN(d)) {
    el.textContent = d.toLocaleString(document.documentElement.lang || undefined);
    el.title = el.getAttribute("datetime");
  }
});
