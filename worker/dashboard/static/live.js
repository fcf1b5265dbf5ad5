// Live updates: one server-sent events stream per page. On "changed", every element that
// listens for it (hx-trigger="changed from:body") fetches its fragment again.
(function () {
  const state = document.getElementById("live-state");
  const source = new EventSource("/events");
  source.addEventListener("open", function () {
    if (state) { state.textContent = "●"; state.title = "live"; }
  });
  source.addEventListener("error", function () {
    if (state) { state.textContent = "○"; state.title = "reconnecting"; }
  });
  source.addEventListener("changed", function () {
    if (window.htmx) { window.htmx.trigger(document.body, "changed"); }
  });
})();
