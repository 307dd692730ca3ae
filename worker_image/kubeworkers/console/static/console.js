// kubeworkers console: refresh each page's live part without a reload.
// The page works without this script; with it, the part inside #live is fetched again from the
// same URL (header X-Console-Fragment: 1) and swapped in. The server escapes everything in that
// HTML, so it is inserted as served. The next refresh waits the page's interval, or three times as
// long as the last one took (a slow query is not asked again and again), and polling pauses while
// the tab is hidden or a control inside the live part has focus (a half-clicked form is kept).
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live) { return; }
  var every = parseInt(document.body.getAttribute("data-poll-ms"), 10) || 2000;
  var updated = document.querySelector(".updated");

  function later(took) { window.setTimeout(refresh, Math.max(every, 3 * took)); }

  function refresh() {
    if (document.hidden || live.contains(document.activeElement)) { later(0); return; }
    var started = Date.now();
    fetch(window.location.href, { headers: { "X-Console-Fragment": "1" }, credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (html) {
        live.innerHTML = html;
        if (updated) { updated.textContent = "updated " + new Date().toLocaleTimeString(); }
        document.body.setAttribute("data-refreshed", String(Date.now()));
      })
      .catch(function (err) {
        if (updated) { updated.textContent = "not updated: " + err.message; }
      })
      .finally(function () { later(Date.now() - started); });
  }
  later(0);
}());
