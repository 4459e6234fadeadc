// kennel console: progressive enhancement only; every page reads and works without it.
// No library, nothing from another host (the Content-Security-Policy allows only this server).
"use strict";

(function () {
  // ---- live regions: <div data-refresh="/ui/..." data-interval="5000"> is fetched again and swapped in
  function refresher(el) {
    var url = el.getAttribute("data-refresh");
    var every = parseInt(el.getAttribute("data-interval") || "5000", 10);
    var busy = false;
    function tick() {
      if (busy || document.hidden) return;
      // keep what the keyboard user is on: no swap while focus is inside the region
      if (el.contains(document.activeElement) && document.activeElement !== el) return;
      busy = true;
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) {
          if (!r.ok || r.redirected) return null; // signed out or forbidden: leave the page as it is
          return r.text();
        })
        .then(function (html) {
          if (html !== null) {
            el.innerHTML = html;
            el.setAttribute("data-refreshed", String(Date.now()));
          }
        })
        .catch(function () { /* the server restarts: try again next time */ })
        .then(function () { busy = false; });
    }
    window.setInterval(tick, every);
  }
  document.querySelectorAll("[data-refresh]").forEach(refresher);

  // ---- chat: the form is sent by fetch and the answer read as server-sent events
  var form = document.querySelector("form[data-chat]");
  if (!form) return;
  var conversation = document.getElementById("conversation");
  var history = form.querySelector("input[name=history]");
  var message = form.querySelector("textarea[name=message]");
  var sendButton = form.querySelector("button[type=submit]");

  function turn(role, label) {
    var article = document.createElement("article");
    article.className = "turn turn-" + role;
    var who = document.createElement("p");
    who.className = "role";
    who.textContent = label;
    var body = document.createElement("div");
    body.className = "answer";
    article.appendChild(who);
    article.appendChild(body);
    conversation.appendChild(article);
    return { article: article, body: body };
  }

  function note(article, cls, text, alert) {
    var p = document.createElement("p");
    p.className = cls;
    if (alert) p.setAttribute("role", "alert");
    p.textContent = text;
    article.appendChild(p);
  }

  function parseEvents(buffer, onEvent) {
    // returns what is left after the last complete event
    buffer = buffer.replace(/\r\n/g, "\n");
    var parts = buffer.split("\n\n");
    var rest = parts.pop();
    parts.forEach(function (block) {
      var name = "message";
      var data = [];
      block.split("\n").forEach(function (line) {
        if (line.indexOf("event:") === 0) name = line.slice(6).trim();
        else if (line.indexOf("data:") === 0) data.push(line.slice(5).replace(/^ /, ""));
      });
      if (data.length) {
        try { onEvent(name, JSON.parse(data.join("\n"))); } catch (e) { /* not ours */ }
      }
    });
    return rest;
  }

  form.addEventListener("submit", function (event) {
    if (!message.value.trim() || !window.fetch || !window.ReadableStream) return; // plain form post
    event.preventDefault();
    var data = new FormData(form);
    var text = message.value;
    var asked = turn("user", conversation.getAttribute("data-you"));
    asked.body.textContent = text;
    var answer = turn("assistant", conversation.getAttribute("data-model"));
    answer.body.classList.add("streaming");
    answer.body.setAttribute("aria-busy", "true");
    sendButton.disabled = true;
    var got = "";
    var ok = false;

    function onEvent(name, body) {
      if (body.type === "start" && body.verdict) note(answer.article, "verdict", body.verdict);
      else if (body.type === "text") { got += body.text; answer.body.textContent = got; }
      else if (body.type === "done") { ok = true; note(answer.article, "stats", body.stats); }
      else if (body.type === "error") {
        if (body.verdict) note(answer.article, "verdict" + (body.blocked ? " block" : ""), body.verdict);
        note(answer.article, "error", body.message || conversation.getAttribute("data-failed"), true);
      }
    }

    fetch(form.action, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Accept": "text/event-stream", "X-CSRF-Token": data.get("csrf_token") },
      body: new URLSearchParams(data),
    }).then(function (r) {
      if (!r.ok || !r.body) throw new Error(String(r.status));
      var reader = r.body.getReader();
      var decoder = new TextDecoder();
      var buffer = "";
      function pump() {
        return reader.read().then(function (chunk) {
          if (chunk.done) { parseEvents(buffer + "\n\n", onEvent); return; }
          buffer = parseEvents(buffer + decoder.decode(chunk.value, { stream: true }), onEvent);
          return pump();
        });
      }
      return pump();
    }).catch(function () {
      note(answer.article, "error", conversation.getAttribute("data-failed"), true);
    }).then(function () {
      answer.body.classList.remove("streaming");
      answer.body.removeAttribute("aria-busy");
      sendButton.disabled = false;
      if (ok) {
        var turns = [];
        try { turns = JSON.parse(history.value || "[]"); } catch (e) { turns = []; }
        turns.push({ role: "user", content: text }, { role: "assistant", content: got });
        history.value = JSON.stringify(turns);
        message.value = "";
      }
      message.focus();
    });
  });
})();
