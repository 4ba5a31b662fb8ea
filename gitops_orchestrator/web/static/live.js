// Status pages: live updates over the event stream, and the try-it form.
//
// On each event of /api/v1/events/stream the page re-fetches itself (at most one fetch in
// flight; events arriving meanwhile cause one more) and swaps every [data-live] region by id.
// Pages are cached by the server with an ETag, so an unchanged page costs a 304. A slow
// revalidation also catches changes that record no event (a rejected commit). No framework;
// every value goes into the page as text, never as HTML.
(function () {
  "use strict";

  var QUIET_REFRESH = 20000; // ms between revalidations while the page is visible
  var DEBOUNCE = 150; // ms: a pass records several events at once; fetch once for them

  var indicator = document.getElementById("live");
  var fetching = false;
  var again = false;
  var timer = null;

  function show(state, text) {
    if (!indicator) return;
    indicator.setAttribute("data-state", state);
    indicator.textContent = text;
  }

  function schedule() {
    if (timer !== null) return;
    timer = window.setTimeout(function () {
      timer = null;
      refresh();
    }, DEBOUNCE);
  }

  function refresh() {
    if (fetching) {
      again = true;
      return;
    }
    fetching = true;
    fetch(window.location.href, { headers: { Accept: "text/html" }, cache: "no-cache", credentials: "same-origin" })
      .then(function (response) {
        // A 404 is news too: the device or deployment is gone from the desired state.
        if (!response.ok && response.status !== 404) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(swap)
      .catch(function () { /* keep the page as it is; the next event tries again */ })
      .then(function () {
        fetching = false;
        if (again) {
          again = false;
          schedule();
        }
      });
  }

  function swap(html) {
    var fresh = new DOMParser().parseFromString(html, "text/html");
    var focused = document.activeElement;
    var focusHref = focused && focused.getAttribute ? focused.getAttribute("href") : null;
    document.querySelectorAll("[data-live]").forEach(function (region) {
      var next = region.id ? fresh.getElementById(region.id) : null;
      if (!next) {
        region.remove();
        return;
      }
      var hadFocus = region.contains(focused);
      var imported = document.importNode(next, true);
      region.replaceWith(imported);
      // Keep a keyboard user's place: focus the same link in the new region.
      if (hadFocus && focusHref) {
        var links = imported.querySelectorAll("a[href]");
        for (var i = 0; i < links.length; i++) {
          if (links[i].getAttribute("href") === focusHref) {
            links[i].focus();
            break;
          }
        }
      }
    });
    if (fresh.title) document.title = fresh.title;
    if (indicator) indicator.title = "Updated " + new Date().toLocaleTimeString();
  }

  function listen() {
    if (!("EventSource" in window)) {
      show("off", "not live");
      return;
    }
    show("connecting", "connecting");
    var source = new EventSource("/api/v1/events/stream");
    var wasOpen = false;
    source.onopen = function () {
      show("live", "live");
      // After a reconnection, events may have been missed: look once.
      if (wasOpen) schedule();
      wasOpen = true;
    };
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) show("off", "not live");
      else show("connecting", "reconnecting");
    };
    source.onmessage = schedule;
    source.onmessage = schedule; // every event, whatever its kind
    window.addEventListener("pagehide", function () { source.close(); });
    window.setInterval(function () {
      if (document.visibilityState === "visible") schedule();
    }, QUIET_REFRESH);
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "visible") schedule();
    });
  }

  // Try it: post the form with fetch() and show the answer of /execute/<deployment>.
  function tryIt(form) {
    var out = document.getElementById("try-it-result");
    var button = form.querySelector("button[type=submit]");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      button.disabled = true;
      out.className = "result";
      out.textContent = "Running…";
      fetch(form.action, { method: "POST", body: new FormData(form), credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          return response.json().then(
            function (body) { return { status: response.status, ok: response.ok, body: body }; },
            function () { return { status: response.status, ok: false, body: null }; }
          );
        })
        .then(result, function (error) { result({ status: 0, ok: false, body: { error: { message: String(error) } } }); })
        .then(function () { button.disabled = false; });
    });

    function result(answer) {
      out.textContent = "";
      var body = answer.body || {};
      if (answer.ok) {
        out.className = "result ok";
        out.appendChild(document.createTextNode("Result: "));
        var value = document.createElement("output");
        value.setAttribute("form", form.id);
        var text = typeof body.result === "string" ? body.result : JSON.stringify(body.result);
        if (/^https?:\/\//.test(text)) {
          var link = document.createElement("a");
          link.href = text;
          link.textContent = text;
          value.appendChild(link);
        } else {
          value.textContent = text;
        }
        out.appendChild(value);
      } else {
        out.className = "result failed";
        var message = body.error && body.error.message ? body.error.message : "no answer";
        out.textContent = "Failed" + (answer.status ? " (" + answer.status + ")" : "") + ": " + message;
      }
      if (body.resultUrl) {
        var more = document.createElement("p");
        var where = document.createElement("a");
        where.href = body.resultUrl;
        where.textContent = "result on the device";
        more.appendChild(where);
        out.appendChild(more);
      }
    }
  }

  listen();
  var form = document.getElementById("try-it-form");
  if (form) tryIt(form);
})();
