// Plaza room page: live updates, older messages on scroll, local times and
// a composer that does not reload. The page works without it.
(function () {
  "use strict";
  var main = document.getElementById("room");
  var fmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  function localise(root) {
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      var d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d)) t.textContent = fmt.format(d);
    });
  }
  localise(document);
  if (!main) return;
  var list = document.getElementById("timeline");
  function fragment(html) {
    var t = document.createElement("template");
    t.innerHTML = html;
    localise(t.content);
    return t.content;
  }
  function nearBottom() {
    return window.innerHeight + window.scrollY >= document.body.scrollHeight - 80;
  }
  function byId(id) { return document.getElementById(id); }

  // Live updates.
  var live = main.dataset.live;
  if (live && window.EventSource && !document.querySelector("a[href='?']")) {
    var es = new EventSource(live + "?since=" + encodeURIComponent(main.dataset.pos));
    es.onopen = function () { main.setAttribute("data-connected", "1"); };
    es.onmessage = function (e) {
      var d;
      try { d = JSON.parse(e.data); } catch (err) { return; }
      var stick = nearBottom();
      if (d.members !== undefined) {
        var m = byId("members");
        if (m) m.textContent = d.members + (d.members === 1 ? " member" : " members");
      }
      if (d.redacts) {
        var gone = byId(d.redacts);
        if (gone) {
          gone.classList.add("deleted");
          gone.querySelector(".body").innerHTML = "<em>Message deleted</em>";
        }
      } else if (d.replaces && d.html) {
        var old = byId(d.replaces);
        if (old) {
          var neu = fragment(d.html).firstElementChild;
          var thread = old.querySelector(":scope > details");
          if (thread) neu.appendChild(thread);
          old.replaceWith(neu);
        }
      } else if (d.html && !byId(d.event_id)) {
        var root = d.thread_root && byId(d.thread_root);
        if (root) {
          var det = root.querySelector(":scope > details");
          if (!det) {
            det = document.createElement("details");
            det.className = "thread";
            det.innerHTML = "<summary></summary><ol></ol>";
            root.appendChild(det);
          }
          det.querySelector("ol").appendChild(fragment(d.html));
          var n = det.querySelector("ol").children.length;
          det.querySelector("summary").textContent = n + (n === 1 ? " reply" : " replies");
        } else {
          list.appendChild(fragment(d.html));
          var empty = byId("empty");
          if (empty) empty.remove();
        }
      }
      if (stick) window.scrollTo(0, document.body.scrollHeight);
    };
    es.addEventListener("reset", function () { es.close(); location.reload(); });
  }

  // Older messages when the top of the list comes into view.
  var older = byId("older");
  if (older && window.IntersectionObserver) {
    var loading = false;
    var io = new IntersectionObserver(function (entries) {
      if (!entries[0].isIntersecting || loading || !older.getAttribute("href")) return;
      loading = true;
      var url = older.getAttribute("href") + "&fragment=1";
      fetch(url, { credentials: "same-origin" }).then(function (r) {
        if (!r.ok) throw new Error(r.status);
        var next = r.headers.get("X-Plaza-Older") || "";
        return r.text().then(function (html) {
          var h = document.body.scrollHeight;
          list.insertBefore(fragment(html), list.firstChild);
          window.scrollBy(0, document.body.scrollHeight - h);
          if (next) older.setAttribute("href", next); else { io.disconnect(); older.parentNode.remove(); }
        });
      }).catch(function () {}).then(function () { loading = false; });
    });
    io.observe(older);
  }

  // The composer posts without leaving the page; the live stream shows
  // the message.
  var form = byId("composer");
  if (form && window.fetch) {
    var box = byId("body");
    box.addEventListener("keydown", function (e) {
      if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); }
    });
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var text = box.value;
      if (!text.trim()) return;
      var status = byId("status");
      function say(msg) { if (status) status.textContent = msg; }
      say("");
      fetch(form.action, {
        method: "POST", credentials: "same-origin",
        headers: { "Accept": "application/json" },
        body: new URLSearchParams({ body: text })
      }).then(function (r) {
        if (r.ok) { box.value = ""; return; }
        return r.json().then(function (j) { say("Not sent: " + (j.error || r.status)); });
      }).catch(function () { say("Not sent: the server cannot be reached."); });
    });
  }
  if (!document.querySelector("a[href='?']")) window.scrollTo(0, document.body.scrollHeight);
})();
