// The console's one script (docs/console.md): local times, actions with the CSRF token, the live
// runs feed (server-sent events), the dead letters' bulk replay. No library, no build step.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;

function localTimes(root) {
  for (const el of root.querySelectorAll("time[datetime]")) {
    const moment = new Date(el.getAttribute("datetime"));
    if (!isNaN(moment)) el.textContent = moment.toLocaleString();
  }
}

function notice(text, bad, link) {
  const el = document.getElementById("notice");
  el.textContent = text;
  if (link) {
    const a = document.createElement("a");
    a.href = link.href;
    a.textContent = link.text;
    el.append(" ", a);
  }
  el.classList.toggle("bad", Boolean(bad));
  el.hidden = false;
}

async function post(url, body) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "X-CSRF-Token": csrf, "Content-Type": "application/json" },
    body: JSON.stringify(body || {}),
    credentials: "same-origin",
  });
  let answer = {};
  try { answer = await response.json(); } catch (e) { answer = { error: response.statusText }; }
  return { ok: response.ok, status: response.status, answer };
}

function runLink(id) {
  return { href: "/ui/runs/" + encodeURIComponent(id), text: id };
}

async function act(button) {
  if (button.dataset.confirm && !button.classList.contains("armed")) {
    button.dataset.label = button.textContent;
    button.textContent = button.dataset.confirm;
    button.classList.add("armed");
    setTimeout(() => { button.classList.remove("armed"); button.textContent = button.dataset.label; }, 5000);
    return;
  }
  button.disabled = true;
  const { ok, status, answer } = await post(button.dataset.post, button.dataset.body ? JSON.parse(button.dataset.body) : {});
  button.disabled = false;
  if (!ok) return notice(`${status}: ${answer.error || "refused"}`, true);
  const dead = button.closest("tr.dead");  // a replayed dead letter is one no more
  if (dead) dead.remove();
  if (answer.run_id) notice(answer.replay_of ? "Replayed as run" : "Queued run", false, runLink(answer.run_id));
  else notice(button.dataset.done || "Done: " + (answer.status || "ok"));
  if (!answer.run_id) setTimeout(() => location.reload(), 400);
}

async function fire(form) {
  let input;
  try { input = JSON.parse(form.elements.input.value || "{}"); } catch (e) {
    return notice("The input is not valid JSON: " + e.message, true);
  }
  const { ok, status, answer } = await post(form.dataset.fire, { input });
  if (!ok) return notice(`${status}: ${answer.error || "refused"}`, true);
  notice("Fired: run", false, runLink(answer.run_id));
}

function upsert(run) {
  const row = document.getElementById("run-" + run.id);
  const template = document.createElement("template");
  template.innerHTML = run.html.trim();
  const fresh = template.content.firstElementChild;
  localTimes(fresh);
  if (row) { row.replaceWith(fresh); return; }
  const body = document.getElementById("runs");
  if (!body) return;
  const later = [...body.rows].find((r) => r.dataset.id < run.id);
  if (later) body.insertBefore(fresh, later); else if (body.rows.length < 200) body.append(fresh);
  fresh.classList.add("fresh");
  const empty = document.querySelector("p.empty");
  if (empty) empty.remove();
}

function listen(url) {
  const state = document.getElementById("live-state");
  const source = new EventSource(url);
  const shown = document.getElementById("run-status");
  source.addEventListener("run", (event) => {
    const run = JSON.parse(event.data);
    const moved = shown && (run.status !== shown.dataset.status || run.progress !== shown.dataset.progress);
    if (moved) { source.close(); location.reload(); return; }  // a run's page: its status or a tool call moved
    upsert(run);
  });
  source.onopen = () => { if (state) { state.textContent = "live"; state.classList.remove("down"); } };
  source.onerror = () => {
    // CLOSED: refused (too many feeds open, or the session ended); the browser will not try again
    const text = source.readyState === EventSource.CLOSED ? "live updates off: reload" : "reconnecting…";
    if (state) { state.textContent = text; state.classList.add("down"); }
  };
}

function bulk() {
  const preview = document.getElementById("bulk-preview");
  if (!preview) return;
  const picked = () => [...document.querySelectorAll("input.pick:checked")].map((c) => c.value);
  document.querySelector("[data-pick-all]").addEventListener("click", () => {
    const boxes = [...document.querySelectorAll("input.pick")];
    const all = boxes.every((c) => c.checked);
    boxes.forEach((c) => { c.checked = !all; });
  });
  document.querySelector("[data-bulk-replay]").addEventListener("click", () => {
    const n = picked().length;
    if (!n) return notice("Select the dead letters to replay first.", true);
    document.getElementById("bulk-count").textContent = `Replay ${n} dead letter${n === 1 ? "" : "s"}?`;
    preview.hidden = false;
  });
  document.querySelector("[data-bulk-cancel]").addEventListener("click", () => { preview.hidden = true; });
  document.querySelector("[data-bulk-confirm]").addEventListener("click", async () => {
    preview.hidden = true;
    let done = 0;
    const failed = [];
    for (const id of picked()) {
      const { ok, answer } = await post("/ui/api/runs/" + encodeURIComponent(id) + "/replay");
      if (ok) done += 1; else failed.push(`${id}: ${answer.error}`);
    }
    notice(`Replayed ${done}.` + (failed.length ? " Refused: " + failed.join("; ") : ""), failed.length > 0);
    setTimeout(() => location.reload(), 800);
  });
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-post]");
  if (button) act(button);
});
document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-fire]");
  if (form) { event.preventDefault(); fire(form); }
});
localTimes(document);
bulk();
if (document.body.dataset.live) listen(document.body.dataset.live);
