// keyherald console: live fleet and health, the revocation progress bar, copy buttons.
// Every value from the server is set with textContent: nothing is parsed as HTML.
"use strict";

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function row(cells, cls) {
  const tr = el("tr", null, cls || "");
  for (const cell of cells) {
    const td = el("td", cell.text !== undefined ? cell.text : cell);
    if (cell.cls) td.className = cell.cls;
    tr.appendChild(td);
  }
  return tr;
}

function fill(body, rows, empty, span) {
  body.replaceChildren();
  if (!rows.length) {
    const tr = row([empty], "empty");
    tr.firstChild.colSpan = span;
    body.appendChild(tr);
    return;
  }
  for (const tr of rows) body.appendChild(tr);
}

async function getJSON(url) {
  const response = await fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } });
  if (response.status === 401) {
    window.location.assign("/console/signin");
    throw new Error("signed out");
  }
  if (!response.ok) throw new Error("HTTP " + response.status);
  return response.json();
}

function showHealth(h) {
  const box = document.getElementById("health");
  if (!box) return;
  box.classList.toggle("ok", !!h.ok);
  box.classList.toggle("bad", !h.ok);
  const set = (id, text) => { const n = document.getElementById(id); if (n) n.textContent = text; };
  set("health-state", h.ok ? "Healthy" : "Trouble");
  set("health-role", h.role);
  set("health-redis", h.redis ? "reachable" : "UNREACHABLE");
  set("health-seq", "seq " + h.seq);
  set("health-log", (h.log || "").slice(0, 8));
  set("health-leader", h.leader_is_me ? "this replica" : (h.leader || "none"));
  set("health-problem", h.problem || "");
}

function showFleet(f) {
  const live = document.getElementById("fleet-live");
  if (!live) return;
  fill(live, f.live.map((a) => row([
    { text: a.agent_id, cls: "mono" }, (a.audience || []).join(", "), a.seq,
    a.lag_events === null ? "other log" : a.lag_events, a.lag_seconds.toFixed(1) + " s",
    a.connected ? "yes" : "NO", a.stale ? "STALE" : "no", a.refused_events, a.age.toFixed(1) + " s ago",
  ], a.behind ? "behind" : "")), "No live agent reports presence.", 9);
  fill(document.getElementById("fleet-lost"), f.lost.map((a) => row([
    { text: a.agent_id, cls: "mono" }, (a.audience || []).join(", "), a.seq, a.age.toFixed(1) + " s ago",
  ])), "None.", 4);
  const summary = document.getElementById("fleet-summary");
  if (summary) {
    summary.replaceChildren(document.createTextNode(f.live.length + " live agent(s)"));
    if (f.trouble) {
      summary.appendChild(document.createTextNode(", "));
      summary.appendChild(el("b", f.trouble + " behind or stale", "bad-text"));
    }
    if (f.lost.length) summary.appendChild(document.createTextNode(", " + f.lost.length + " lost"));
    if (f.unseen) summary.appendChild(document.createTextNode(", " + f.unseen + " connected without presence"));
  }
}

function pollLive() {
  const box = document.getElementById("health");
  if (!box) return;
  const url = box.dataset.liveUrl;
  const tick = async () => {
    try {
      const doc = await getJSON(url);
      showHealth(doc.health);
      showFleet(doc.fleet);
    } catch (e) {
      const problem = document.getElementById("health-problem");
      if (problem && e.message !== "signed out") problem.textContent = "console cannot reach this replica (" + e.message + ")";
    }
  };
  setInterval(tick, 2000);
}

const GIVE_UP_MS = 30000;

async function followProgress() {
  const box = document.getElementById("progress");
  if (!box) return;
  const fillBar = document.getElementById("progress-fill");
  const text = document.getElementById("progress-text");
  const missingList = document.getElementById("progress-missing");
  const started = Date.now();
  let seen = -1;
  for (;;) {
    let doc;
    try {
      doc = await getJSON(box.dataset.confirmUrl + "&seen=" + seen);
    } catch (e) {
      if (e.message === "signed out") return;
      text.textContent = "Cannot follow the confirmation: " + e.message;
      box.classList.add("failed");
      return;
    }
    seen = doc.confirmed;
    const pct = doc.live ? Math.round((100 * doc.confirmed) / doc.live) : 100;
    fillBar.style.width = pct + "%";
    if (doc.live === 0) {
      text.textContent = "No live agent reports presence: nothing can confirm it (seq " + doc.seq + ").";
      box.classList.add("failed");
      return;
    }
    if (doc.complete) {
      text.textContent = "Applied by " + doc.confirmed + " of " + doc.live + " agents in " + doc.elapsed_ms + " ms";
      box.classList.add("complete");
      missingList.replaceChildren();
      return;
    }
    text.textContent = "Waiting: " + doc.confirmed + " of " + doc.live + " agents hold seq " + doc.seq + "…";
    missingList.replaceChildren(...doc.missing.map((a) => el("li",
      a.agent_id + " at seq " + a.seq + ", last seen " + a.age + " s ago" + (a.stale ? " (stale)" : "") + (a.live ? "" : " (silent)"))));
    if (Date.now() - started > GIVE_UP_MS) {
      text.textContent = "Not confirmed after " + Math.round(GIVE_UP_MS / 1000) + " s: " + doc.confirmed + " of " + doc.live +
        " agents hold seq " + doc.seq + ". Missing:";
      box.classList.add("failed");
      return;
    }
  }
}

function copyButtons() {
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      const source = document.getElementById(button.dataset.copy);
      if (!source) return;
      try {
        await navigator.clipboard.writeText(source.textContent);
        button.textContent = "Copied";
      } catch (e) {
        const range = document.createRange();
        range.selectNodeContents(source);
        const selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        button.textContent = "Selected: press Ctrl+C";
      }
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  pollLive();
  followProgress();
  copyButtons();
});
