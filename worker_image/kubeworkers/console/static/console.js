// kubeworkers console: refresh each page's live part without a reload.
// The page works without this script; with it, the part inside #live is fetched again every few
// seconds from the same URL (header X-Console-Fragment: 1) and swapped in. The server escapes
// everything in that HTML, so it is inserted as served. Polling pauses while the tab is hidden or
// a control inside the live part has focus (a half-clicked form is not swapped away).
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live) { return; }
  var every = parseInt(document.body.getAttribute("data-poll-ms"), 10) || 2000;
  var updated = document.querySelector(".updated");
  var busy = false;

  function refresh() {
    if (busy || document.hidden || live.contains(document.activeElement)) { return; }
    busy = true;
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
      .finally(function () { busy = false; });
  }
  window.setInterval(refresh, every);
}());
