// Live job panel. With EventSource: the answer grows as the model writes it (GET
// /api/questions/{id}/events), drawn by a tiny Markdown renderer that only ever makes DOM
// nodes and text nodes (never HTML from the model's text); at the end the panel is replaced
// by the one the server rendered and sanitised (the /live/ JSON). Without EventSource: polls
// /live/. Without this script: the page's <meta> refresh and its "Refresh now" link, which
// this script turns off.
(function () {
  "use strict";
  var panel = document.getElementById("job-panel");
  if (!panel || !window.fetch) return;


  var liveUrl = panel.getAttribute("data-live-url");
  var eventsUrl = panel.getAttribute("data-events-url");
  var announcer = document.getElementById("job-announcer");
  var FINAL = { succeeded: true, failed: true, cancelled: true };
  var text = "";
  var drawn = null;
  var ticker = null;

  function announce(message) {
    if (announcer && message) announcer.textContent = message;
  }

  // --- elapsed time -------------------------------------------------------------------
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

  function hideRefreshHint() {
    var hint = panel.querySelector("[data-refresh-hint]");
    if (hint) hint.hidden = true;
  }

  // --- a small, safe Markdown renderer (DOM nodes only) ---------------------------------
  var INLINE = /(`[^`\n]+`)|(\*\*[^*\n]+\*\*)|(\*[^*\n]+\*)|(_[^_\n]+_)/;

  function inline(parent, source) {
    while (source) {
      var match = INLINE.exec(source);
      if (!match) { parent.appendChild(document.createTextNode(source)); return; }
      if (match.index) parent.appendChild(document.createTextNode(source.slice(0, match.index)));
      var token = match[0];
      var node;
      if (match[1]) { node = document.createElement("code"); node.textContent = token.slice(1, -1); }
      else if (match[2]) { node = document.createElement("strong"); inline(node, token.slice(2, -2)); }
      else { node = document.createElement("em"); inline(node, token.slice(1, -1)); }
      parent.appendChild(node);
      source = source.slice(match.index + token.length);
    }
  }

  function markdown(source) {
    var root = document.createDocumentFragment();
    var lines = source.split("\n");
    var paragraph = null;
    var list = null;
    var code = null;
    for (var i = 0; i < lines.length; i++) {
      var line = lines[i];
      if (code) {
        if (/^```/.test(line)) { code = null; } else { code.textContent += (code.textContent ? "\n" : "") + line; }
        continue;
      }
      if (/^```/.test(line)) {
        var pre = document.createElement("pre");
        code = document.createElement("code");
        pre.appendChild(code);
        root.appendChild(pre);
        paragraph = list = null;
        continue;
      }
      var heading = /^(#{1,6})\s+(.*)$/.exec(line);
      var item = /^\s*(?:[-*+]|\d+\.)\s+(.*)$/.exec(line);
      if (!line.trim()) { paragraph = list = null; continue; }
      if (heading) {
        var h = document.createElement("h" + heading[1].length);
        inline(h, heading[2]);
        root.appendChild(h);
        paragraph = list = null;
      } else if (item) {
        if (!list) { list = document.createElement("ul"); root.appendChild(list); }
        var li = document.createElement("li");
        inline(li, item[1]);
        list.appendChild(li);
        paragraph = null;
      } else {
        if (!paragraph) { paragraph = document.createElement("p"); root.appendChild(paragraph); }
        else { paragraph.appendChild(document.createTextNode(" ")); }
        inline(paragraph, line);
        list = null;
      }
    }
    return root;
  }

  function draw() {
    drawn = null;
    var box = panel.querySelector("[data-stream-answer]");
    if (!box) return;
    while (box.firstChild) box.removeChild(box.firstChild);
    if (!text) { box.hidden = true; return; }
    box.appendChild(markdown(text));
    box.hidden = false;
  }

  function scheduleDraw() {
    if (drawn === null) drawn = window.requestAnimationFrame ? window.requestAnimationFrame(draw) : window.setTimeout(draw, 16);
  }

  // --- the server's panel ---------------------------------------------------------------
  function swapPanel(data) {
    panel.innerHTML = data.html; // rendered and sanitised by the server
    hideRefreshHint();
    bindStop();
    announce("Status: " + data.status_label);
  }

  function loadPanel() {
    return fetch(liveUrl, { headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.status === 401 || response.status === 404) {
          return response.json().then(function (body) { announce(body.detail); return { finished: true }; });
        }
        if (!response.ok) return { finished: false };
        return response.json().then(function (data) {
          if (data.status !== currentStatus() || data.finished) {
            swapPanel(data);
            if (!data.finished) draw();
          }
          return data;
        });
      });
  }

  function finish() {
    if (ticker) window.clearInterval(ticker);
    ticker = null;
    tick();
  }

  // --- Stop without leaving the page (the form posts the same way without JavaScript) ----
  function bindStop() {
    var button = panel.querySelector("[data-stop]");
    if (!button || !button.form) return;
    button.form.addEventListener("submit", function (event) {
      event.preventDefault();
      button.disabled = true;
      announce("Stopping…");
      fetch(button.form.action, { method: "POST", body: new FormData(button.form), credentials: "same-origin" })
        .then(function () { if (!source) poll(); })
        .catch(function () { button.disabled = false; });
    });
  }

  // --- polling (no EventSource, or the stream refused) -----------------------------------
  var delay = 700;
  function poll() {
    loadPanel()
      .then(function (data) {
        if (data.finished) { finish(); return; }
        window.setTimeout(poll, delay);
        delay = Math.min(delay * 1.15, 5000);
      })
      .catch(function () { window.setTimeout(poll, delay); });
  }

  // --- Server-Sent Events -------------------------------------------------------------------
  var source = null;
  function follow() {
    source = new EventSource(eventsUrl);
    source.addEventListener("status", function (event) {
      var status = JSON.parse(event.data).status;
      if (status !== currentStatus()) loadPanel();
    });
    // A new attempt (a retry after a failed call): what came before was an earlier attempt's.
    source.addEventListener("reset", function () {
      text = "";
      scheduleDraw();
    });
    source.addEventListener("delta", function (event) {
      text += JSON.parse(event.data).text;
      scheduleDraw();
    });
    ["done", "failed", "cancelled"].forEach(function (name) {
      source.addEventListener(name, function () {
        source.close();
        loadPanel().then(finish, finish);
      });
    });
    source.onerror = function () {
      // EventSource retries by itself (with Last-Event-ID); a refused stream it gives up on.
      if (source.readyState === EventSource.CLOSED) { source = null; poll(); }
    };
  }

  function start() {
    hideRefreshHint();
    // A finished job that still refreshes was stopped while running: the refresh brings its
    // partial answer once the worker has stored it.
    if (FINAL[currentStatus()]) { tick(); return; }
    // The server-side refresh is for pages whose script did not run; this one did.
    // window.stop() cancels it (removing the element alone does not); after `load` it has
    // nothing else to stop, since nothing of this script has started yet.
    var refresh = document.querySelector("meta[data-server-refresh]");
    if (refresh) {
      window.stop();
      refresh.parentNode.removeChild(refresh);
    }
    bindStop();
    ticker = window.setInterval(tick, 200);
    tick();
    if (window.EventSource && eventsUrl) follow(); else poll();
  }

  if (document.readyState === "complete") start();
  else window.addEventListener("load", start);
})();
