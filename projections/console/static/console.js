// Tagus console: the few interactive parts.  No framework; charts with plotly.js from
// the plotly package (served by the API at /console/vendor/), figures built server-side.
"use strict";
(function () {
  const csrf = document.body.dataset.csrf || "";
  const hdrs = {"X-Requested-With": "fetch", "X-CSRF-Token": csrf};

  function toLogin() { window.location.assign("/login?next=" + encodeURIComponent(location.pathname + location.search)); }

  // -- charts: <div class="chart" data-figure="ID"> + <script type="application/json" id="ID">
  function drawCharts(root) {
    if (typeof window.Plotly === "undefined") return;
    root.querySelectorAll(".chart[data-figure]").forEach(function (el) {
      const src = document.getElementById(el.dataset.figure);
      if (!src) return;
      const fig = JSON.parse(src.textContent);
      window.Plotly.newPlot(el, fig.data, fig.layout,
        {responsive: true, displaylogo: false, modeBarButtonsToRemove: ["select2d", "lasso2d"]});
      el.dataset.drawn = "1";
    });
  }

  // -- parts of a page that refresh themselves: <div data-refresh="URL" data-every="S">
  function busy(el) {
    const a = document.activeElement;
    return a && el.contains(a) && /INPUT|TEXTAREA|SELECT/.test(a.tagName);
  }
  function refresher(el) {
    const every = Math.max(2, Number(el.dataset.every || 15)) * 1000;
    async function tick() {
      if (document.hidden || busy(el)) return;
      try {
        const r = await fetch(el.dataset.refresh, {headers: hdrs, credentials: "same-origin"});
        if (r.status === 401) { toLogin(); return; }
        if (!r.ok) return;
        const html = await r.text();
        if (html !== el.dataset.last) {
          el.innerHTML = html;
          el.dataset.last = html;
          drawCharts(el);
        }
      } catch (e) { /* offline for a moment: the next tick tries again */ }
    }
    setInterval(tick, every);
  }

  // -- live: a schedule proposed, an alert raised (polling /console/live).  What was
  // there at the first poll is known; anything newer is announced in the banner, which
  // keeps every announcement, from page to page of the session, until it is dismissed
  // (sessionStorage, keyed by the session's CSRF token; body[data-live-ready] = first
  // poll done).
  const key = "tagus-live:" + csrf;
  function recall() {
    try { return JSON.parse(window.sessionStorage.getItem(key) || "null"); } catch (e) { return null; }
  }
  function remember() {
    try { window.sessionStorage.setItem(key, JSON.stringify({seen: seen, told: told})); } catch (e) { /* private mode */ }
  }
  const kept = recall() || {};
  let seen = kept.seen || null;
  const told = kept.told || [];
  function showBanner() {
    const b = document.getElementById("live-banner");
    if (!b) return;
    if (!told.length) { b.hidden = true; b.innerHTML = ""; return; }
    b.innerHTML = "<ul>" + told.map(function (t) { return '<li data-news="' + escapeHtml(t.key) + '">' + t.html + "</li>"; }).join("") +
      '</ul><button type="button" class="dismiss" id="live-dismiss" aria-label="dismiss">&times;</button>';
    b.hidden = false;
    document.getElementById("live-dismiss").addEventListener("click", function () {
      told.length = 0; remember(); showBanner();
    });
  }
  function announce(key, html) {
    if (told.some(function (t) { return t.key === key; })) return;
    told.push({key: key, html: html});
    while (told.length > 5) told.shift();
    showBanner();
  }
  async function live() {
    if (!csrf) return;
    try {
      const r = await fetch("/console/live", {headers: hdrs, credentials: "same-origin"});
      if (r.status === 401) { toLogin(); return; }
      if (!r.ok) return;
      const now = await r.json();
      const badge = document.getElementById("alert-badge");
      if (badge) {
        badge.textContent = String(now.open_alerts);
        badge.hidden = now.open_alerts === 0;
        badge.title = now.open_alerts + " open alert(s)";
      }
      if (seen !== null) {
        if (now.latest_schedule && now.latest_schedule !== seen.latest_schedule &&
            now.latest_schedule_what_if === null) {
          now.latest_schedule = seen.latest_schedule;  // what it is is not known yet: next poll
        } else if (now.latest_schedule && now.latest_schedule !== seen.latest_schedule) {
          const link = '<a href="/schedule/' + encodeURIComponent(now.latest_schedule) + '">';
          announce("schedule:" + now.latest_schedule, now.latest_schedule_what_if
            ? "A what-if run finished at " + escapeHtml(now.latest_schedule_at || "") + ": " + link + "see it</a> (for comparison only)."
            : "A new schedule was proposed at " + escapeHtml(now.latest_schedule_at || "") + ": " + link + "review it</a>.");
        }
        if (now.latest_alert && now.latest_alert !== seen.latest_alert &&
            !(seen.latest_alert_at && now.latest_alert_at <= seen.latest_alert_at)) {  // not an older one left open
          announce("alert:" + now.latest_alert, 'An alert was raised: <a href="/alerts">' +
            escapeHtml(now.latest_alert_message || "see alerts") + "</a>.");
        }
      }
      seen = {latest_schedule: now.latest_schedule, latest_alert: now.latest_alert,
              latest_alert_at: now.latest_alert_at};
      remember();
      document.body.dataset.liveReady = "1";
    } catch (e) { /* try again at the next tick */ }
  }
  function escapeHtml(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c];
    });
  }

  // -- forms that ask first: <form data-confirm="question">
  document.addEventListener("submit", function (ev) {
    const q = ev.target.dataset ? ev.target.dataset.confirm : null;
    if (q && !window.confirm(q)) ev.preventDefault();
  });

  // -- drop a file onto the page to ingest it
  function dropzone(zone) {
    const input = zone.querySelector("input[type=file]");
    const out = document.getElementById("upload-result");
    async function send(file) {
      const mapping = document.getElementById("upload-mapping").value;
      out.textContent = "Uploading " + file.name + " (" + file.size + " bytes)...";
      try {
        const r = await fetch("/data/upload?mapping=" + encodeURIComponent(mapping), {
          method: "POST", body: file, credentials: "same-origin",
          headers: Object.assign({"X-Filename": encodeURIComponent(file.name),
                                  "Content-Type": file.type || "application/octet-stream"}, hdrs)});
        if (r.status === 401) { toLogin(); return; }
        const body = await r.json();
        out.textContent = r.ok ? body.message : ("Refused: " + body.detail);
        out.className = r.ok ? "note" : "problem";
      } catch (e) {
        out.textContent = "The upload did not reach the server: " + e;
        out.className = "problem";
      }
    }
    zone.addEventListener("dragover", function (ev) { ev.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", function () { zone.classList.remove("over"); });
    zone.addEventListener("drop", function (ev) {
      ev.preventDefault(); zone.classList.remove("over");
      if (ev.dataTransfer.files.length) send(ev.dataTransfer.files[0]);
    });
    if (input) input.addEventListener("change", function () { if (input.files.length) send(input.files[0]); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    drawCharts(document);
    document.querySelectorAll("[data-refresh]").forEach(refresher);
    document.querySelectorAll(".dropzone").forEach(dropzone);
    const every = Math.max(2, Number(document.body.dataset.liveEvery || 10)) * 1000;
    if (csrf) showBanner();
    live();
    setInterval(live, every);
  });
})();
