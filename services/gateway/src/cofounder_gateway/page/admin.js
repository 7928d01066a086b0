// The operator's view: builds across founders by status (admin token), refreshed every 15 s.

import { $, OPERATOR, api, badge, count, el, signIn, signedOut, when } from "./common.js";

const GROUPS = {
  active: ["queued", "assembling", "running", "finishing"],
  sleeping: ["sleeping"],
  failed: ["failed"],
  done: ["ready", "cancelled"],
};
let cursor = null;

function cell(...children) {
  const td = el("td");
  td.append(...children);
  return td;
}

function statuses() {
  const picked = [...document.querySelectorAll("input[name=group]:checked")].map((i) => i.value);
  return picked.flatMap((group) => GROUPS[group]);
}

async function load({ more = false } = {}) {
  const picked = statuses();
  if (picked.length === 0) {
    $("rows").replaceChildren();
    $("list-status").textContent = "Pick at least one kind of build.";
    return;
  }
  const query = new URLSearchParams({ limit: "50" });
  for (const status of picked) query.append("status", status);
  if (more && cursor) query.set("cursor", cursor);
  let page;
  try {
    page = await api(`/v1/admin/builds?${query}`, { key: OPERATOR });
  } catch (exc) {
    if (exc.status === 401) return signedOut(OPERATOR, "That is not the admin token.");
    $("list-status").textContent = `Could not load the builds: ${exc.message}`;
    return;
  }
  const rows = $("rows");
  if (!more) rows.replaceChildren();
  for (const build of page.items) {
    const tr = el("tr");
    const id = el("code", null, build.id.slice(0, 8));
    id.title = build.id;
    const founder = el("code", null, build.user_id.slice(0, 8));
    founder.title = build.user_id;
    tr.append(
      cell(id),
      cell(founder),
      cell(badge(build.status)),
      cell(when(build.status_changed_at || build.updated_at, { date: true })),
      cell(build.tier),
      cell(count(build.iterations)),
      cell(count(build.tool_calls)),
      cell(`${count(build.input_tokens)} / ${count(build.output_tokens)}`),
      cell(build.error || ""),
    );
    tr.dataset.buildId = build.id;
    rows.append(tr);
  }
  cursor = page.next_cursor;
  $("more").hidden = !cursor;
  const shown = rows.children.length;
  $("list-status").textContent = `${shown} build${shown === 1 ? "" : "s"} shown; updated ${new Date().toLocaleTimeString()}.`;
}

async function main() {
  await signIn({ key: OPERATOR, redeem: false });
  $("content").hidden = false;
  $("filter").addEventListener("submit", (event) => {
    event.preventDefault();
    cursor = null;
    load();
  });
  $("refresh").addEventListener("click", () => load());
  $("more").addEventListener("click", () => load({ more: true }));
  await load();
  setInterval(() => {
    if (!cursor && document.visibilityState === "visible") load();
  }, 15000);
}

main();
