// callfleet dashboard: a few lines of vanilla JS. A "source" delivers batch
// snapshots to a callback: Server-Sent Events, with polling as the fallback.
(function () {
  "use strict";

  function pollingSource(url, intervalMs) {
    return {
      subscribe: function (onSnapshot, onError) {
        var timer = null, stopped = false;
        function tick() {
          fetch(url, {credentials: "same-origin", headers: {accept: "application/json"}})
            .then(function (r) {
              if (r.status === 401) { window.location.href = "/sign-in"; throw new Error("signed out"); }
              if (!r.ok) { throw new Error("HTTP " + r.status); }
              return r.json();
            })
            .then(function (snap) { onSnapshot(snap); })
            .catch(function (e) { if (onError) { onError(e); } })
            .then(function () { if (!stopped) { timer = setTimeout(tick, intervalMs); } });
        }
        timer = setTimeout(tick, intervalMs);
        return function () { stopped = true; clearTimeout(timer); };
      }
    };
  }

  // Server-Sent Events: each event from the batch's stream (the API's, relayed by the
  // dashboard) fetches a fresh snapshot, at most one every 300 ms. If the stream
  // cannot be opened or keeps failing, the fallback (polling) takes over.
  function eventSource(streamUrl, snapshotUrl, fallback) {
    return {
      subscribe: function (onSnapshot, onError) {
        if (!window.EventSource) { return fallback.subscribe(onSnapshot, onError); }
        var es = new EventSource(streamUrl), timer = null, busy = false, again = false;
        var stopFallback = null, failures = 0, stopped = false;
        function refresh() {
          timer = null;
          if (busy) { again = true; return; }
          busy = true;
          fetch(snapshotUrl, {credentials: "same-origin", headers: {accept: "application/json"}})
            .then(function (r) {
              if (r.status === 401) { window.location.href = "/sign-in"; throw new Error("signed out"); }
              if (!r.ok) { throw new Error("HTTP " + r.status); }
              return r.json();
            })
            .then(function (snap) { if (!stopped) { onSnapshot(snap); } })
            .catch(function (e) { if (onError) { onError(e); } })
            .then(function () { busy = false; if (again) { again = false; schedule(); } });
        }
        function schedule() { if (!timer && !stopped) { timer = setTimeout(refresh, 300); } }
        function onEvent() { failures = 0; schedule(); }
        ["call.queued", "call.started", "call.answered", "call.ended", "batch.paused",
         "batch.resumed", "batch.stopped", "batch.completed"].forEach(function (kind) {
          es.addEventListener(kind, onEvent);
        });
        es.onopen = function () { document.documentElement.dataset.liveSource = "sse"; schedule(); };
        es.onerror = function () {
          failures += 1;
          if ((es.readyState === 2 || failures > 3) && !stopFallback && !stopped) {
            es.close();
            document.documentElement.dataset.liveSource = "polling";
            stopFallback = fallback.subscribe(onSnapshot, onError);
          }
        };
        return function () {
          stopped = true; es.close(); clearTimeout(timer);
          if (stopFallback) { stopFallback(); }
        };
      }
    };
  }

  function setText(selector, value) {
    var el = document.querySelector(selector);
    if (el && el.textContent !== String(value)) { el.textContent = value; }
  }

  function render(snap) {
    var bar = document.querySelector("[data-progress]");
    if (bar) { bar.max = snap.total || 1; bar.value = snap.done; bar.textContent = snap.percent + "%"; }
    setText("[data-progress-text]", snap.done + " / " + snap.total + " done");
    ["total", "done", "live", "queued", "state"].forEach(function (k) {
      setText('[data-field="' + k + '"]', snap[k]);
    });
    var chart = document.querySelector("[data-outcome-chart]");
    if (chart && chart.dataset.svg !== snap.outcome_svg) { chart.innerHTML = snap.outcome_svg; chart.dataset.svg = snap.outcome_svg; }
    (snap.calls || []).forEach(function (c) {
      var row = document.querySelector('tr[data-call-id="' + c.call_id + '"]');
      if (!row) { return; }
      var status = row.querySelector('[data-col="status"]');
      if (status && status.textContent !== c.status) {
        status.innerHTML = '<span class="dot s-' + c.status.replace(/[^a-z-]/g, "") + '"></span>';
        status.appendChild(document.createTextNode(c.status));
      }
      var by = row.querySelector('[data-col="answered_by"]');
      if (by && by.textContent !== c.answered_by) { by.textContent = c.answered_by; }
      var len = row.querySelector('[data-col="call_length"]');
      // call_length is in minutes (the hosted product's unit); the table shows seconds.
      if (len) { len.textContent = (Number(c.call_length || 0) * 60).toFixed(0); }
    });
  }

  function watchBatch(options) {
    var note = document.querySelector("[data-live-status]");
    var stop = options.source.subscribe(function (snap) {
      render(snap);
      var finished = snap.total > 0 && snap.done >= snap.total && snap.live === 0;
      if (note) { note.textContent = finished ? "All calls have finished." : "Updated " + new Date().toLocaleTimeString() + "."; }
      if (finished) { stop(); }
    }, function () { if (note) { note.textContent = "Live updates paused: the server did not answer."; } });
  }

  // New batch: list the prompt's placeholders as they are typed, each marked, in a
  // live region next to the Prompt textbox (a textarea cannot hold markup itself).
  // The pattern follows domain/templating.py: {{ name }} or {name}.
  var PLACEHOLDER = /\{\{\s*([^{}"\s](?:[^{}"\r\n]*[^{}"\s])?)\s*\}\}|\{([A-Za-z_][A-Za-z0-9_.-]*)\}/g;
  function markPlaceholders(textbox, out) {
    if (!textbox || !out) { return; }
    function update() {
      var seen = {}, names = [], m;
      PLACEHOLDER.lastIndex = 0;
      while ((m = PLACEHOLDER.exec(textbox.value)) !== null) {
        var name = m[1] || m[2];
        if (!seen[name]) { seen[name] = true; names.push(name); }
      }
      out.textContent = names.length ? "Placeholders in the prompt: " : "";
      names.forEach(function (name) {
        var mark = document.createElement("mark");
        mark.className = "placeholder";
        mark.textContent = "{{" + name + "}}";
        out.appendChild(mark);
        out.appendChild(document.createTextNode(" "));
      });
    }
    textbox.addEventListener("input", update);
    update();
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form && form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });

  window.callfleetDashboard = {pollingSource: pollingSource, eventSource: eventSource, watchBatch: watchBatch, render: render, markPlaceholders: markPlaceholders};
})();
