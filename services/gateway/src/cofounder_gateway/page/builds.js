// The founder's builds, newest first, each linking to its live page.

import { $, FOUNDER, api, badge, count, el, signIn, signedOut, when } from "./common.js";

let cursor = null;

function link(href, text) {
  const a = el("a", null, text);
  a.href = href;
  return a;
}

function cell(...children) {
  const td = el("td");
  td.append(...children);
  return td;
}

async function load({ more = false } = {}) {
  const status = $("status-filter").value;
  const query = new URLSearchParams({ limit: "20" });
  if (status) query.set("status", status);
  if (more && cursor) query.set("cursor", cursor);
  let page;
  try {
    page = await api(`/v1/builds?${query}`);
  } catch (exc) {
    if (exc.status === 401) return signedOut(FOUNDER, "Your session has expired: sign in again.");
    $("list-status").textContent = `Could not load your builds: ${exc.message}`;
    return;
  }
  const rows = $("rows");
  if (!more) rows.replaceChildren();
  for (const build of page.items) {
    const tr = el("tr");
    const preview = /^https?:\/\//.test(build.preview_url || "") ? link(build.preview_url, "open") : "";
    tr.append(
      cell(link(`/app/builds/${build.id}`, build.id.slice(0, 8))),
      cell(build.goal),
      cell(badge(build.status)),
      cell(when(build.created_at, { date: true })),
      cell(count(build.iterations)),
      cell(`${count(build.input_tokens)} / ${count(build.output_tokens)}`),
      cell(preview),
    );
    rows.append(tr);
  }
  cursor = page.next_cursor;
  $("more").hidden = !cursor;
  const shown = rows.children.length;
  $("list-status").textContent = shown
    ? `${shown} build${shown === 1 ? "" : "s"} shown.`
    : "No builds yet: start one with cofounder builds create.";
}

async function main() {
  await signIn();
  $("content").hidden = false;
  $("filter").addEventListener("submit", (event) => {
    event.preventDefault();
    cursor = null;
    load();
  });
  $("more").addEventListener("click", () => load({ more: true }));
  await load();
}

main();
