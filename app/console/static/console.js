// Progressive enhancement only: every page works without this file.
"use strict";

// The workspace switcher moves as soon as a workspace is picked.
document.querySelectorAll("select[data-autosubmit]").forEach((select) => {
  select.addEventListener("change", () => select.form.submit());
});

// Registering a cluster: show the kubeconfig fields or the agent's note, as chosen.
document.querySelectorAll("#register-cluster").forEach((form) => {
  const show = () => {
    const agent = form.elements.type.value === "agent";
    form.querySelectorAll(".when-direct").forEach((el) => { el.hidden = agent; });
    form.querySelectorAll(".when-agent").forEach((el) => { el.hidden = !agent; });
  };
  form.querySelectorAll("input[name=type]").forEach((radio) => radio.addEventListener("change", show));
  show();
});

// Destructive forms ask in a dialog first (without JavaScript the server asks on a page).
document.querySelectorAll("form[data-confirm]").forEach((form) => {
  form.addEventListener("submit", (event) => {
    const dialog = document.getElementById("confirm-dialog");
    if (!dialog || form.elements.confirmed.value === "yes") return;
    event.preventDefault();
    dialog.querySelector("#confirm-text").textContent = form.dataset.confirm;
    dialog.returnValue = "";
    dialog.addEventListener("close", () => {
      if (dialog.returnValue === "yes") {
        form.elements.confirmed.value = "yes";
        form.submit();
      }
    }, { once: true });
    dialog.showModal();
  });
});

// A deployment's matrix follows the event stream: each event redraws it from the server.
document.querySelectorAll("[data-live-matrix]").forEach((holder) => {
  const base = holder.dataset.liveMatrix;
  const badge = document.getElementById("live");
  let pending = null;
  const redraw = async () => {
    pending = null;
    const response = await fetch(base + "/matrix", {
      headers: { "X-Console-Fragment": "1" },
      credentials: "same-origin",
    });
    if (response.status === 401) {
      window.location.assign("/login?next=" + encodeURIComponent(window.location.pathname));
      return;
    }
    if (response.ok) holder.innerHTML = await response.text();
    const events = document.getElementById("recent-events");
    if (events) {
      const recent = await fetch(base + "/recent", { credentials: "same-origin" });
      if (recent.ok) events.innerHTML = await recent.text();
    }
  };
  const soon = () => {
    if (pending === null) pending = setTimeout(redraw, 250);
  };
  const stream = new EventSource(base + "/stream");
  stream.addEventListener("open", () => {
    if (badge) badge.hidden = false;
    soon(); // whatever happened between drawing the page and the stream opening
  });
  stream.addEventListener("message", soon);
  stream.addEventListener("error", () => {
    if (badge) badge.hidden = true;
    // Closed for good (the console answered 401, 404, 429 or 503): one redraw tells the user
    // why, or sends them to sign in again.
    if (stream.readyState === EventSource.CLOSED) redraw();
  });
});

// The fleet redraws its tiles every few seconds while the page is in view: the API has no
// stream of cluster changes (probes write them), so the page asks as often as probes run.
document.querySelectorAll("[data-live-fleet]").forEach((holder) => {
  const badge = document.getElementById("live");
  const redraw = async () => {
    if (document.hidden) return;
    try {
      const response = await fetch(holder.dataset.liveFleet, { credentials: "same-origin" });
      if (response.status === 401) {
        window.location.assign("/login?next=/fleet");
        return;
      }
      if (badge) badge.hidden = !response.ok;
      if (response.ok) holder.innerHTML = await response.text();
    } catch {
      if (badge) badge.hidden = true; // the console is out of reach: try again later
    }
  };
  if (badge) badge.hidden = false;
  setInterval(redraw, 5000);
  document.addEventListener("visibilitychange", redraw);
});

// A command shown once: a button copies it (Clipboard API); without this script, or when the
// browser refuses, the field is selected for the user to copy. The page forgets it on leaving,
// so that a page restored from the back/forward cache does not show it again.
document.querySelectorAll("button[data-copy]").forEach((button) => {
  const field = document.getElementById(button.dataset.copy);
  const status = document.getElementById("copy-status");
  if (!field) return;
  const say = (words) => { if (status) status.textContent = words; };
  button.hidden = false;
  say("");
  field.addEventListener("focus", () => field.select());
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(field.value);
      say("Copied.");
    } catch {
      field.focus();
      field.select();
      say("Selected: press Ctrl+C (⌘C) to copy.");
    }
  });
  window.addEventListener("pagehide", () => {
    field.value = "";
    button.disabled = true;
    say("Not shown again.");
  });
});
