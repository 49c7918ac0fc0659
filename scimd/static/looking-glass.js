// scimd Looking Glass viewer: plain DOM, no dependencies, works air-gapped.
// Every captured string reaches the page through textContent, never as markup.
"use strict";

(() => {
  const TOKEN_KEY = "scimd.lookingGlass.token"; // sessionStorage only: the token leaves with the tab, never persisted to disk
  const MAX_EVENTS = 2000; // kept in this tab; older ones drop off
  const PAGE = 1000; // the API's largest limit
  const RETRY_MS = [1000, 2000, 5000, 10000];

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || "",
    events: [], // oldest first
    lastSeq: 0,
    selected: null,
    paused: false,
    source: null,
    retries: 0,
    live: false, // a routine stream refresh keeps showing "live"
    generation: 0, // bumps on (re)connect so a stale stream's callbacks are ignored
  };

  const $ = (id) => document.getElementById(id);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // ---- connection -------------------------------------------------------------------------

  function authHeaders() {
    return state.token ? { Authorization: "Bearer " + state.token } : {};
  }

  class Unauthorized extends Error {}

  async function api(path, options = {}) {
    const response = await fetch(path, {
      ...options,
      headers: { Accept: "application/json", ...authHeaders() },
      cache: "no-store",
      credentials: "omit",
    });
    if (response.status === 401) throw new Unauthorized();
    if (!response.ok) throw new Error("HTTP " + response.status);
    return response.json();
  }

  function setStatus(kind, text) {
    const node = $("status");
    node.className = "status status-" + kind;
    node.textContent = text;
  }

  async function connect() {
    const generation = ++state.generation;
    closeStream();
    if (!state.live) setStatus("wait", "connecting…");
    try {
      await catchUp();
      if (generation !== state.generation) return;
      await openStream(generation);
    } catch (error) {
      if (generation !== state.generation) return;
      if (error instanceof Unauthorized) {
        askToken(state.token ? "That token was refused." : "");
      } else {
        scheduleReconnect(generation);
      }
    }
  }

  // Fetch what the server holds beyond what we have, page by page.
  async function catchUp() {
    for (;;) {
      const page = await api(`api/events?since=${state.lastSeq}&limit=${PAGE}`);
      addEvents(page.events);
      if (page.events.length < PAGE || state.lastSeq >= page.lastSeq) return;
    }
  }

  // EventSource cannot send a header: trade the token for a short-lived ticket first.
  async function openStream(generation) {
    const { ticket } = await api("api/ticket", { method: "POST" });
    if (generation !== state.generation) return;
    const url = `api/stream?ticket=${encodeURIComponent(ticket)}&since=${state.lastSeq}`;
    const source = new EventSource(url);
    state.source = source;
    source.onopen = () => {
      state.retries = 0;
      state.live = true;
      setStatus("live", "live");
      $("signout").hidden = !state.token;
    };
    source.onmessage = (message) => addEvents([JSON.parse(message.data)]);
    // The server ends every stream after about a minute, by when its ticket has expired, so
    // EventSource's own retry would fail: reconnect ourselves, fresh ticket, from the last seq.
    source.onerror = () => {
      if (generation !== state.generation) return;
      closeStream();
      scheduleReconnect(generation);
    };
  }

  function closeStream() {
    if (state.source) {
      state.source.close();
      state.source = null;
    }
  }

  // The first retry is the routine end of a stream: reconnect at once, quietly. Back off after.
  function scheduleReconnect(generation) {
    state.retries += 1;
    const delay = state.retries === 1 ? 200 : RETRY_MS[Math.min(state.retries - 2, RETRY_MS.length - 1)];
    if (state.retries > 1) {
      state.live = false;
      setStatus("wait", "reconnecting…");
    }
    setTimeout(() => {
      if (generation === state.generation) connect();
    }, delay);
  }

  // ---- token ------------------------------------------------------------------------------

  function askToken(message) {
    closeStream();
    state.generation += 1;
    state.live = false;
    setStatus("off", "token needed");
    $("login").hidden = false;
    const error = $("login-error");
    error.hidden = !message;
    error.textContent = message;
    $("token").value = "";
    $("token").focus();
  }

  function submitToken(event) {
    event.preventDefault();
    state.token = $("token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, state.token);
    $("login").hidden = true;
    connect();
  }

  function signOut() {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = "";
    $("signout").hidden = true;
    askToken("");
  }

  // ---- events and table -------------------------------------------------------------------

  function addEvents(events) {
    for (const event of events) {
      if (event.seq <= state.lastSeq) continue; // a replay after reconnecting
      state.lastSeq = event.seq;
      state.events.push(event);
      if (!state.paused && matches(event)) prependRow(event, true);
    }
    if (state.events.length > MAX_EVENTS) {
      state.events.splice(0, state.events.length - MAX_EVENTS);
      trimRows();
    }
    updateCounter();
  }

  function resourceClass(event) {
    return ["Users", "Groups", "Bulk"].includes(event.resource) ? event.resource : "other";
  }

  function matches(event) {
    const method = $("f-method").value;
    const status = $("f-status").value;
    const resource = $("f-resource").value;
    const text = $("f-text").value.trim().toLowerCase();
    if (method && event.method !== method) return false;
    if (status && String(event.status)[0] !== status) return false;
    if (resource && resourceClass(event) !== resource) return false;
    if (text) {
      const haystack = [event.path, event.query, event.client, event.requestId, event.userAgent]
        .join(" ").toLowerCase();
      if (!haystack.includes(text)) return false;
    }
    return true;
  }

  function formatTime(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return iso;
    const pad = (n, w = 2) => String(n).padStart(w, "0");
    return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
  }

  function statusClass(status) {
    return "st st-" + String(status)[0] + "xx";
  }

  function makeRow(event, fresh) {
    const row = el("tr", fresh ? "fresh" : "");
    row.tabIndex = 0;
    row.dataset.seq = event.seq;
    row.append(
      el("td", "num dim", event.seq),
      el("td", "time", formatTime(event.time)),
      cellWith(el("span", "client", event.client)),
      cellWith(el("span", "m m-" + event.method.toLowerCase(), event.method)),
      pathCell(event),
      cellWith(el("span", statusClass(event.status), event.status), "num"),
      el("td", "num dim", event.durationMs.toFixed(1) + " ms"),
    );
    if (state.selected && state.selected.seq === event.seq) row.classList.add("selected");
    return row;
  }

  function cellWith(child, className) {
    const cell = el("td", className);
    cell.append(child);
    return cell;
  }

  function pathCell(event) {
    const cell = el("td", "path");
    cell.append(el("span", "", event.path.replace(/^\/scim\/v2/, "") || "/"));
    if (event.query) cell.append(el("span", "query", "?" + safeDecode(event.query)));
    cell.title = event.path + (event.query ? "?" + safeDecode(event.query) : "");
    return cell;
  }

  function safeDecode(query) {
    try {
      return decodeURIComponent(query.replace(/\+/g, " "));
    } catch {
      return query;
    }
  }

  function prependRow(event, fresh) {
    $("rows").prepend(makeRow(event, fresh));
    $("empty").hidden = true;
  }

  function trimRows() {
    const oldest = state.events.length ? state.events[0].seq : Infinity;
    for (const row of [...$("rows").children]) {
      if (Number(row.dataset.seq) < oldest) row.remove();
    }
  }

  function renderTable() {
    const body = $("rows");
    const rows = [];
    for (let i = state.events.length - 1; i >= 0; i -= 1) {
      if (matches(state.events[i])) rows.push(makeRow(state.events[i], false));
    }
    body.replaceChildren(...rows);
    $("empty").hidden = rows.length > 0;
    $("empty").textContent = state.events.length
      ? "No exchange matches these filters."
      : "Waiting for SCIM requests under /scim/v2…";
    updateCounter();
  }

  function updateCounter() {
    const shown = $("rows").children.length;
    const total = state.events.length;
    $("counter").textContent = shown === total ? `${total} exchanges` : `${shown} of ${total} exchanges`;
  }

  function findEvent(seq) {
    return state.events.find((event) => event.seq === seq) || null;
  }

  function select(seq) {
    const event = findEvent(seq);
    if (!event) return;
    state.selected = event;
    for (const row of $("rows").children) {
      row.classList.toggle("selected", Number(row.dataset.seq) === seq);
    }
    renderDetail(event);
  }

  // ---- detail -----------------------------------------------------------------------------

  function renderDetail(event) {
    $("detail").hidden = false;
    $("d-title").textContent = `#${event.seq} ${event.method} ${event.path}`;
    const meta = $("d-meta");
    meta.replaceChildren();
    const fields = [
      ["Status", event.status],
      ["Duration", event.durationMs.toFixed(3) + " ms"],
      ["Time", event.time],
      ["Client", event.client],
      ["User-Agent", event.userAgent || "—"],
      ["From", event.clientAddress || "—"],
      ["Request id", event.requestId || "—"],
      ["Query", event.query ? safeDecode(event.query) : "—"],
    ];
    for (const [name, value] of fields) {
      meta.append(el("dt", "", name), el("dd", "", value));
    }
    renderDecisions(event.decisions || []);
    renderBody($("d-req"), $("d-req-note"), event.request);
    renderBody($("d-resp"), $("d-resp-note"), event.response);
  }

  function renderBody(pre, note, part) {
    const notes = [];
    if (part.contentType) notes.push(part.contentType);
    if (part.size) notes.push(formatBytes(part.size));
    if (part.truncated) notes.push("cut at 64 KiB");
    note.textContent = notes.join(" · ");
    note.classList.toggle("warn", Boolean(part.truncated));
    if (part.body === null || part.body === undefined) {
      pre.replaceChildren(el("span", "dim", "(empty)"));
      return;
    }
    let text = part.body;
    if (!part.truncated) {
      try {
        text = JSON.stringify(JSON.parse(part.body), null, 2);
      } catch {
        // not JSON: show it as sent
      }
    }
    highlightInto(pre, text);
  }

  function formatBytes(n) {
    return n < 1024 ? `${n} B` : `${(n / 1024).toFixed(1)} KiB`;
  }

  // JSON colouring by building spans: the text itself only ever lands in textContent.
  const TOKEN_RE = /("(?:\\.|[^"\\])*")(\s*:)?|\b(true|false|null)\b|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)/g;

  function highlightInto(pre, text) {
    const parts = [];
    let last = 0;
    for (const match of text.matchAll(TOKEN_RE)) {
      if (match.index > last) parts.push(document.createTextNode(text.slice(last, match.index)));
      let cls = "j-num";
      if (match[1] !== undefined) {
        cls = match[2] ? "j-key" : match[1] === '"[redacted]"' ? "j-redacted" : "j-str";
      } else if (match[3] !== undefined) {
        cls = "j-lit";
      }
      parts.push(el("span", cls, match[1] !== undefined ? match[1] : match[0]));
      if (match[2]) parts.push(document.createTextNode(match[2]));
      last = match.index + match[0].length;
    }
    if (last < text.length) parts.push(document.createTextNode(text.slice(last)));
    pre.replaceChildren(...parts);
  }

  function pretty(value) {
    return typeof value === "string" ? value : JSON.stringify(value, null, 2);
  }

  function codeBlock(value, className) {
    const pre = el("pre", "code" + (className ? " " + className : ""));
    highlightInto(pre, value === undefined ? "(absent)" : pretty(value));
    return pre;
  }

  const DECISION_RENDERERS = {
    filter: renderFilter,
    patch: renderPatch,
    leniency: renderLeniency,
    bulk: renderBulk,
  };

  function renderDecisions(decisions) {
    const box = $("d-decisions");
    box.replaceChildren();
    if (!decisions.length) return;
    const groups = new Map();
    for (const decision of decisions) {
      const kind = String(decision.kind);
      if (!groups.has(kind)) groups.set(kind, []);
      groups.get(kind).push(decision);
    }
    for (const [kind, items] of groups) {
      const section = el("section", "block decision decision-" + kind.replace(/[^a-z0-9-]/gi, ""));
      section.append(el("h3", "", titleFor(kind, items.length)));
      (DECISION_RENDERERS[kind] || renderGeneric)(section, items);
      box.append(section);
    }
  }

  function titleFor(kind, count) {
    const titles = { filter: "Filter", patch: "PATCH operations", leniency: "Leniencies", bulk: "Bulk operations" };
    return `${titles[kind] || kind} (${count})`;
  }

  function renderFilter(section, items) {
    for (const item of items) {
      section.append(el("h4", "", "Parsed tree"), codeBlock(item.tree));
      section.append(el("h4", "", "SQL"), codeBlock(item.sql));
      section.append(el("h4", "", "Parameters"), codeBlock(item.params === undefined ? [] : item.params));
    }
  }

  function renderPatch(section, items) {
    for (const item of items) {
      const head = el("div", "patch-head");
      head.append(el("span", "m m-patch", item.op), el("code", "", item.path === null || item.path === undefined ? "(no path)" : item.path));
      if (item.attribute !== undefined) head.append(el("span", "dim", "→"), el("code", "", item.attribute));
      section.append(head);
      const grid = el("div", "diff");
      // Always JSON, so the string "False" and the boolean false look different.
      const before = JSON.stringify(item.before === undefined ? null : item.before, null, 2);
      const after = JSON.stringify(item.after === undefined ? null : item.after, null, 2);
      grid.append(diffSide("before", before, after), diffSide("after", after, before));
      section.append(grid);
    }
  }

  // Line-level diff: a line absent from the other side is marked, enough to spot the change.
  function diffSide(label, text, other) {
    const side = el("div", "diff-side diff-" + label);
    side.append(el("div", "diff-label", label));
    const pre = el("pre", "code");
    const otherLines = new Set(other.split("\n"));
    for (const line of text.split("\n")) {
      pre.append(el("span", otherLines.has(line) ? "line" : "line changed", line || " "));
    }
    side.append(pre);
    return side;
  }

  function renderLeniency(section, items) {
    const list = el("ul", "leniencies");
    for (const item of items) list.append(el("li", "", item.text !== undefined ? item.text : pretty(item)));
    section.append(list);
  }

  function renderBulk(section, items) {
    const table = el("table", "mini");
    const head = el("tr");
    for (const name of ["method", "bulkId", "status", "resolved"]) head.append(el("th", "", name));
    table.append(head);
    for (const item of items) {
      const row = el("tr");
      row.append(
        el("td", "", item.method),
        el("td", "", item.bulkId),
        cellWith(el("span", statusClass(item.status), item.status)),
        el("td", "", Array.isArray(item.resolved) ? item.resolved.join(", ") : pretty(item.resolved ?? "")),
      );
      table.append(row);
    }
    section.append(table);
  }

  function renderGeneric(section, items) {
    for (const item of items) {
      const { kind, ...detail } = item;
      section.append(codeBlock(detail));
    }
  }

  // ---- wiring -----------------------------------------------------------------------------

  function onRowActivate(event) {
    const row = event.target.closest("tr[data-seq]");
    if (row) select(Number(row.dataset.seq));
  }

  function onRowKey(event) {
    const row = event.target.closest("tr[data-seq]");
    if (!row) return;
    const next = event.key === "ArrowDown" ? row.nextElementSibling : event.key === "ArrowUp" ? row.previousElementSibling : null;
    if (event.key === "Enter") {
      select(Number(row.dataset.seq));
    } else if (next) {
      event.preventDefault();
      next.focus();
      select(Number(next.dataset.seq));
    }
  }

  function togglePause() {
    state.paused = !state.paused;
    $("pause").setAttribute("aria-pressed", String(state.paused));
    $("pause").textContent = state.paused ? "Resume" : "Pause";
    if (!state.paused) renderTable();
  }

  function clearTable() {
    state.events = [];
    state.selected = null;
    $("detail").hidden = true;
    renderTable();
  }

  function init() {
    $("login-form").addEventListener("submit", submitToken);
    $("signout").addEventListener("click", signOut);
    $("pause").addEventListener("click", togglePause);
    $("clear").addEventListener("click", clearTable);
    $("d-close").addEventListener("click", () => {
      state.selected = null;
      $("detail").hidden = true;
      for (const row of $("rows").querySelectorAll(".selected")) row.classList.remove("selected");
    });
    for (const id of ["f-method", "f-status", "f-resource"]) $(id).addEventListener("change", renderTable);
    $("f-text").addEventListener("input", renderTable);
    $("rows").addEventListener("click", onRowActivate);
    $("rows").addEventListener("keydown", onRowKey);
    connect(); // without a stored token, the first 401 brings up the token form
  }

  document.addEventListener("DOMContentLoaded", init);
})();
