// shipyard dashboard: confirm dialogs for actions, and polling of live parts of a page.
"use strict";

document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form instanceof HTMLFormElement ? form.dataset.confirm : undefined;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

// An element with data-poll="URL" is refreshed from URL (an HTML fragment) every data-interval
// ms, until the fragment marks itself final; never while focus is inside it (keyboard users
// would lose their place).
function poll(element) {
  const url = element.dataset.poll;
  const interval = Number(element.dataset.interval || 2000);
  const tick = async () => {
    if (!element.contains(document.activeElement)) {
      try {
        const response = await fetch(url, { headers: { Accept: "text/html" }, credentials: "same-origin" });
        if (response.redirected || response.status === 401) {
          window.location.assign("/ui/login");
          return;
        }
        if (response.ok) {
          element.innerHTML = await response.text();
        }
      } catch (error) {
        // The server is restarting or unreachable: try again at the next tick.
      }
    }
    if (!element.querySelector("[data-final]")) {
      window.setTimeout(tick, interval);
    }
  };
  if (!element.querySelector("[data-final]")) {
    window.setTimeout(tick, interval);
  }
}

document.querySelectorAll("[data-poll]").forEach(poll);
