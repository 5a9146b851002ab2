// webhookd console: live updates of the events list, and nothing else.
// The page works without this: it only polls /ui/rows for rows newer than
// the top one and puts them on top (the server renders and escapes them).
(function () {
  "use strict";
  var table = document.getElementById("events");
  if (!table || !table.hasAttribute("data-live")) return;
  var body = table.tBodies[0];
  var src = table.getAttribute("data-live");
  var note = document.getElementById("live");
  function topId() {
    var row = body.querySelector("tr[data-id]");
    return row ? row.getAttribute("data-id") : "";
  }
  function poll() {
    var after = topId();
    var url = src + (src.indexOf("?") < 0 ? "?" : "&") + "after=" + encodeURIComponent(after);
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        if (html) {
          var tpl = document.createElement("template");
          tpl.innerHTML = "<table><tbody>" + html + "</tbody></table>";
          var rows = tpl.content.querySelectorAll("tr[data-id]");
          for (var i = rows.length - 1; i >= 0; i--) {
            if (body.querySelector('tr[data-id="' + rows[i].getAttribute("data-id") + '"]')) continue;
            rows[i].classList.add("new");
            body.insertBefore(rows[i], body.firstChild);
          }
          var empty = document.getElementById("empty");
          if (rows.length && empty) empty.remove();
        }
        if (note) note.textContent = "Live: checked " + new Date().toLocaleTimeString() + ".";
      })
      .catch(function () {
        if (note) note.textContent = "Live updates paused: the daemon did not answer; retrying.";
      })
      .then(function () { setTimeout(poll, 2000); });
  }
  setTimeout(poll, 2000);
})();
