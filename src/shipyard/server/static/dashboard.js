// shipyard dashboard: confirm dialogs for actions, and live updates of the parts of a page that
// show running work, with a "stale" banner while the updates fail. No build step, no CDN.
"use strict";

document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form instanceof HTMLFormElement ? form.dataset.confirm : undefined;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

const LIVE_INTERVAL_MS = 2000;

// --- the stale banner: shown from the first failed update until one succeeds ----------------------

const stale = { since: null };

function clock(date) {
  return date.toISOString().slice(11, 19) + " UTC";
}

function updatesFailed() {
  const banner = document.getElementById("stale");
  if (!banner) return;
  if (stale.since === null) {
    stale.since = new Date();
  }
  banner.textContent = "stale: store unreachable since " + clock(stale.since) +
    " (what this page shows may be out of date; it updates again once the server answers)";
  banner.hidden = false;
}

function updatesWork() {
  stale.since = null;
  const banner = document.getElementById("stale");
  if (banner) banner.hidden = true;
}

// One fetch of a live part; the response's HTML when it can be used, else null. A failure to reach
// the server, or a 5xx (its state store is down), shows the banner; a lost session goes to login.
async function fetchLive(url, headers) {
  let response;
  try {
    response = await fetch(url, { headers: { Accept: "text/html", ...headers }, credentials: "same-origin" });
  } catch (error) {
    updatesFailed();
    return null;
  }
  if (response.status === 401 || (response.redirected && new URL(response.url).pathname === "/ui/login")) {
    window.location.assign("/ui/login?next=" + encodeURIComponent(window.location.pathname + window.location.search));
    return null;
  }
  if (response.status >= 500) {
    updatesFailed();
    return null;
  }
  updatesWork();
  return response.ok ? response.text() : null;
}

// Never swap a part that holds the keyboard focus: keyboard users would lose their place.
function holdsFocus(element) {
  return element.contains(document.activeElement) && document.activeElement !== document.body;
}

// --- data-poll: a part refreshed from its own fragment URL until it marks itself final ------------

function poll(element) {
  const url = element.dataset.poll;
  const interval = Number(element.dataset.interval || LIVE_INTERVAL_MS);
  const tick = async () => {
    if (!document.hidden && !holdsFocus(element)) {
      const html = await fetchLive(url, {});
      if (html !== null && !holdsFocus(element)) {
        element.innerHTML = html;
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

// --- data-live: the parts of a page refreshed from the page itself --------------------------------
// The page is fetched again with X-Shipyard-Live: 1 (the server answers its content alone) and
// each element with data-live is replaced by the element of the same id, when it changed.

function refreshLive() {
  const parts = Array.from(document.querySelectorAll("[data-live][id]"));
  if (parts.length === 0) return;
  const tick = async () => {
    if (!document.hidden) {
      const html = await fetchLive(window.location.href, { "X-Shipyard-Live": "1" });
      if (html !== null) {
        const fresh = new DOMParser().parseFromString(html, "text/html");
        for (const part of document.querySelectorAll("[data-live][id]")) {
          const next = fresh.getElementById(part.id);
          if (next && next.innerHTML !== part.innerHTML && !holdsFocus(part)) {
            part.replaceWith(document.importNode(next, true));
          }
        }
      }
    }
    window.setTimeout(tick, LIVE_INTERVAL_MS);
  };
  window.setTimeout(tick, LIVE_INTERVAL_MS);
}

document.querySelectorAll("[data-poll]").forEach(poll);
refreshLive();
