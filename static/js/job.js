// Live job panel: polls the page's JSON view and swaps in the panel the server rendered
// (and sanitised). The answer is never built from raw text here.
(function () {
  "use strict";
  var panel = document.getElementById("job-panel");
  if (!panel || !window.fetch) return;
  var url = panel.getAttribute("data-live-url");
  var announcer = document.getElementById("job-announcer");
  var delay = 700;
  var timer = null;

  function format(seconds) {
    seconds = Math.max(seconds, 0);
    if (seconds < 10) return seconds.toFixed(1) + " s";
    if (seconds < 60) return Math.round(seconds) + " s";
    var total = Math.round(seconds);
    var minutes = Math.floor(total / 60);
    if (minutes < 60) return minutes + " min " + (total % 60) + " s";
    return Math.floor(minutes / 60) + " h " + (minutes % 60) + " min";
  }

  function tick() {
    var spans = panel.querySelectorAll("[data-elapsed]:not([data-until])");
    for (var i = 0; i < spans.length; i++) {
      var since = Date.parse(spans[i].getAttribute("data-since"));
      if (!isNaN(since)) spans[i].textContent = format((Date.now() - since) / 1000);
    }
  }

  function currentStatus() {
    var job = panel.querySelector("[data-job-status]");
    return job ? job.getAttribute("data-job-status") : null;
  }

  function finished(status) {
    return status === "succeeded" || status === "failed";
  }

  function stop(message) {
    if (timer) window.clearInterval(timer);
    timer = null;
    if (message && announcer) announcer.textContent = message;
  }

  function schedule() {
    window.setTimeout(poll, delay);
    delay = Math.min(delay * 1.15, 5000);
  }

  function poll() {
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.status === 401 || response.status === 404) {
          return response.json().then(function (body) { stop(body.detail); });
        }
        if (!response.ok) { schedule(); return; }
        return response.json().then(function (data) {
          if (data.status !== currentStatus()) {
            panel.innerHTML = data.html; // rendered and sanitised by the server
            if (announcer) announcer.textContent = "Status: " + data.status_label;
          }
          if (data.finished) { stop(); tick(); } else { schedule(); }
        });
      })
      .catch(function () { schedule(); });
  }

  if (finished(currentStatus())) return;
  timer = window.setInterval(tick, 200);
  tick();
  schedule();
})();
