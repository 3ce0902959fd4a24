// qbo-sync dashboard: one customer's invoices, read from the api with a bearer token.
// The token comes from the URL fragment (#token=...), which browsers never send to a server,
// and is kept in sessionStorage so it survives reloads but not the tab.
"use strict";

const TOKEN_KEY = "qbo-sync.api-token";
const FINAL_STATUSES = new Set(["succeeded", "failed", "needs_reauth"]);
const POLL_MS = 750;
const POLL_LIMIT_MS = 120000;
const PAGE_SIZE = 100;

const state = {
  customer: null,
  status: "all",
  sort: "due_date",
  invoices: [],
  nextCursor: null,
  asOf: null,
};

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.error;
  }
}

// ---- token and customer from the URL --------------------------------------------------------

function takeTokenFromFragment() {
  const params = new URLSearchParams(window.location.hash.slice(1));
  const token = params.get("token");
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    // Keep the token out of the address bar, history and bookmarks.
    history.replaceState(null, "", window.location.pathname + window.location.search);
  }
}

const token = () => sessionStorage.getItem(TOKEN_KEY);

// ---- exact money ----------------------------------------------------------------------------

// Amounts are exact JSON numbers. JSON.parse's source text access hands us their digits
// before they become binary floats, so 0.1 + 0.2 shows as 0.30, never 0.30000000000000004.
function parseJson(text) {
  return JSON.parse(text, (key, value, context) =>
    typeof value === "number" && context && typeof context.source === "string"
      ? { exact: context.source, value }
      : value,
  );
}

const digits = (amount) =>
  amount && typeof amount === "object" && "exact" in amount ? amount.exact : String(amount);
const plain = (amount) =>
  amount && typeof amount === "object" && "value" in amount ? amount.value : amount;

const symbols = new Map();
function currencySymbol(currency) {
  if (!currency) return "";
  if (!symbols.has(currency)) {
    let symbol = currency + " ";
    try {
      const parts = new Intl.NumberFormat("en-US", { style: "currency", currency }).formatToParts(1);
      symbol = (parts.find((p) => p.type === "currency") || {}).value || symbol;
    } catch (_) {
      /* an unknown code: show it as is */
    }
    symbols.set(currency, symbol);
  }
  return symbols.get(currency);
}

function formatMoney(amount, currency) {
  let text = digits(amount);
  if (/e/i.test(text)) text = Number(text).toFixed(2);
  const negative = text.startsWith("-");
  if (negative) text = text.slice(1);
  let [whole, fraction = ""] = text.split(".");
  fraction = fraction.padEnd(2, "0");
  whole = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return `${negative ? "−" : ""}${currencySymbol(currency)}${whole}.${fraction}`;
}

// ---- api ------------------------------------------------------------------------------------

async function api(method, path, options = {}) {
  const headers = { Accept: "application/json", Authorization: `Bearer ${token()}` };
  Object.assign(headers, options.headers || {});
  const response = await fetch(path, { method, headers, cache: "no-store" });
  const text = await response.text();
  let body = null;
  try {
    body = text ? parseJson(text) : null;
  } catch (_) {
    body = null;
  }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

const enc = encodeURIComponent;

function invoicesPath(cursor) {
  const q = new URLSearchParams({ status: state.status, sort: state.sort, limit: String(PAGE_SIZE) });
  if (cursor) q.set("cursor", cursor);
  return `/api/customers/${enc(state.customer)}/invoices?${q}`;
}

// ---- rendering ------------------------------------------------------------------------------

function showNotice(text, askForToken = false) {
  $("notice-text").textContent = text;
  $("token-form").hidden = !askForToken;
  $("notice").hidden = false;
}

function hideNotice() {
  $("notice").hidden = true;
}

function relativeTime(iso) {
  if (!iso) return "never";
  const seconds = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  if (seconds < 45) return "just now";
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.round(minutes / 60);
  if (hours < 36) return `${hours} h ago`;
  return new Date(iso).toLocaleDateString("en-US", { dateStyle: "medium" });
}

function formatDate(iso) {
  if (!iso) return "—";
  const [y, m, d] = iso.split("-").map(Number);
  return new Date(Date.UTC(y, m - 1, d)).toLocaleDateString("en-US", {
    month: "short",
    day: "numeric",
    year: "numeric",
    timeZone: "UTC",
  });
}

function daysBetween(fromIso, toIso) {
  return Math.round((Date.parse(toIso) - Date.parse(fromIso)) / 86400000);
}

function dueNote(invoice) {
  if (invoice.status !== "open" || !invoice.due_date || !state.asOf) return "";
  const days = daysBetween(state.asOf, invoice.due_date);
  if (days < 0) return `${-days} day${days === -1 ? "" : "s"} overdue`;
  if (days === 0) return "due today";
  return `in ${days} day${days === 1 ? "" : "s"}`;
}

function statusOf(invoice) {
  if (invoice.deleted || invoice.status === "deleted") return ["deleted", "Deleted"];
  if (invoice.status === "voided") return ["voided", "Voided"];
  if (invoice.status === "paid") return ["paid", "Paid"];
  if (invoice.overdue) return ["overdue", "Overdue"];
  return ["open", "Open"];
}

function cell(text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  td.textContent = text;
  return td;
}

function renderRows() {
  const body = $("invoice-rows");
  body.replaceChildren();
  for (const invoice of state.invoices) {
    const [kind, label] = statusOf(invoice);
    const tr = document.createElement("tr");
    tr.className = `row-${kind}`;
    tr.dataset.invoiceId = invoice.invoice_id;
    tr.dataset.testid = "invoice-row";
    tr.append(cell(invoice.doc_number ? `#${invoice.doc_number}` : `Id ${invoice.invoice_id}`, "doc"));
    tr.append(cell(formatDate(invoice.txn_date)));
    const due = cell(formatDate(invoice.due_date));
    const note = dueNote(invoice);
    if (note) {
      const small = document.createElement("small");
      small.className = invoice.overdue ? "note late" : "note";
      small.textContent = note;
      due.append(small);
    }
    tr.append(due);
    tr.append(cell(formatMoney(invoice.total_amt, invoice.currency), "num"));
    const balance = cell(formatMoney(invoice.balance, invoice.currency), "num balance");
    balance.dataset.testid = "invoice-balance";
    if (invoice.home_balance !== null && invoice.home_balance !== undefined) {
      // A foreign-currency invoice of a multicurrency company: QBO's home-currency figure.
      const home = document.createElement("small");
      home.className = "note";
      home.dataset.testid = "invoice-home-balance";
      home.textContent = `home ${digits(invoice.home_balance)}`;
      balance.append(home);
    }
    tr.append(balance);
    const status = document.createElement("td");
    const pill = document.createElement("span");
    pill.className = `pill pill-${kind}`;
    pill.textContent = label;
    pill.dataset.testid = "invoice-status";
    status.append(pill);
    if (invoice.partially_paid) {
      // Alongside open or overdue, not instead of it: the two are independent.
      const partial = document.createElement("span");
      partial.className = "pill pill-partial";
      partial.textContent = "Partially paid";
      partial.dataset.testid = "invoice-partially-paid";
      status.append(" ", partial);
    }
    tr.append(status);
    body.append(tr);
  }
  $("empty").hidden = state.invoices.length > 0;
  $("more").hidden = !state.nextCursor;
  for (const button of document.querySelectorAll("button.sort")) {
    const key = button.dataset.sort;
    const active = state.sort.replace(/^-/, "") === key;
    button.classList.toggle("active", active);
    button.dataset.dir = active ? (state.sort.startsWith("-") ? "desc" : "asc") : "";
  }
}

function renderTotals(totals) {
  const currency = totals.currency;
  $("total-balance").textContent = formatMoney(totals.balance, currency);
  $("total-overdue").textContent = formatMoney(totals.overdue_balance, currency);
  $("total-amt").textContent = formatMoney(totals.total_amt, currency);
  $("total-count").textContent = String(plain(totals.count));
  const overdue = Number(plain(totals.overdue_balance)) !== 0;
  $("total-overdue").closest(".metric").classList.toggle("has-overdue", overdue);
}

// An inactive QuickBooks customer (made inactive, or merged away) is shown as such; a merge
// re-points the mapping to the survivor, whose id the customer view names.
function customerState(customer) {
  if (customer.active !== false) return "";
  return customer.merged_from ? "Inactive in QuickBooks (merged)" : "Inactive in QuickBooks";
}

function renderCustomer(info) {
  const customer = info.customer;
  $("customer-name").textContent = customer.display_name || customer.local_customer_id;
  $("customer-meta").textContent =
    `${customer.local_customer_id} · QuickBooks company ${customer.realm_id}` +
    ` · last synced ${relativeTime(customer.last_synced_at)}`;
  $("customer-meta").title = customer.last_synced_at || "";
  $("customer-inactive").hidden = customer.active !== false;
  $("customer-inactive").textContent = customerState(customer);
  const badge = $("connection");
  const connection = info.connection;
  let kind = "off";
  let label = "Not connected";
  if (connection && connection.status === "active") [kind, label] = ["ok", "Connected"];
  else if (connection && connection.needs_reauth) [kind, label] = ["warn", "Needs reconnect"];
  else if (connection) [kind, label] = ["off", "Disconnected"];
  badge.className = `badge badge-${kind}`;
  badge.textContent = label;
  const reconnect = connection && connection.reconnect_url;
  $("reauth").hidden = !reconnect;
  if (reconnect) {
    $("reconnect-link").href = reconnect;
    $("reauth-reason").textContent = connection.reauth_reason ? `(${connection.reauth_reason})` : "";
  }
}

// ---- loading --------------------------------------------------------------------------------

async function loadCustomer() {
  renderCustomer(await api("GET", `/api/customers/${enc(state.customer)}`));
}

async function loadInvoices() {
  const page = await api("GET", invoicesPath(null));
  state.invoices = page.invoices;
  state.nextCursor = page.page.next_cursor;
  state.asOf = page.as_of;
  renderTotals(page.totals);
  renderRows();
  return page;
}

async function loadMore() {
  if (!state.nextCursor) return;
  const page = await api("GET", invoicesPath(state.nextCursor));
  state.invoices = state.invoices.concat(page.invoices);
  state.nextCursor = page.page.next_cursor;
  renderRows();
}

function signature(page) {
  return JSON.stringify([
    page.invoices.map((i) => [i.invoice_id, plain(i.version)]),
    digits(page.totals.balance),
    plain(page.totals.count),
  ]);
}

function handleError(error) {
  if (error instanceof ApiError && error.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    showNotice("The API token was not accepted. Enter a valid token.", true);
    $("invoice-card").hidden = true;
  } else if (error instanceof ApiError && error.status === 404) {
    showNotice(`Customer “${state.customer}” is not linked to a QuickBooks customer yet.`);
    $("invoice-card").hidden = true;
  } else {
    setRefreshStatus(`Could not load: ${error.message}`, "error");
  }
}

async function openCustomer() {
  if (!state.customer) {
    showNotice("Enter a customer id above, or open this page with ?customer=<id>.");
    return;
  }
  if (!token()) {
    showNotice("Open this page with #token=<API token> in the URL, or enter the token here.", true);
    return;
  }
  try {
    await Promise.all([loadCustomer(), loadInvoices()]);
    hideNotice();
    $("invoice-card").hidden = false;
  } catch (error) {
    handleError(error);
  }
}

// ---- refresh --------------------------------------------------------------------------------

function setRefreshStatus(text, kind = "") {
  const el = $("refresh-status");
  el.textContent = text;
  el.className = `refresh-status ${kind}`;
}

function idempotencyKey() {
  if (window.crypto && typeof window.crypto.randomUUID === "function") return crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

// QuickBooks limits each company's requests; a throttled refresh waits and resumes by itself.
function progressText(command) {
  if (command.status === "running") return "Fetching from QuickBooks…";
  if (command.status === "throttled") {
    const at = command.resumes_at ? new Date(command.resumes_at).toLocaleTimeString("en-US") : null;
    return at ? `QuickBooks asked us to slow down; resuming at ${at}…` : "QuickBooks asked us to slow down…";
  }
  return "Queued…";
}

async function waitForCommand(statusUrl) {
  const deadline = Date.now() + POLL_LIMIT_MS;
  for (;;) {
    const command = await api("GET", statusUrl);
    if (FINAL_STATUSES.has(command.status)) return command;
    setRefreshStatus(progressText(command), "busy");
    if (Date.now() > deadline) return command;
    await sleep(POLL_MS);
  }
}

// The command is done when QBO's invoices are stored and their events published; the read
// model follows a moment later, when the projector has consumed them. Reload until the page
// shows a change, or a few seconds have passed (a refresh may change nothing).
async function reloadUntilProjected(before, expectChange) {
  let page = await loadInvoices();
  for (let i = 0; expectChange && i < 20 && signature(page) === before; i++) {
    await sleep(500);
    page = await loadInvoices();
  }
}

async function refresh() {
  const button = $("refresh");
  button.disabled = true;
  setRefreshStatus("Queued…", "busy");
  try {
    const before = signature(await api("GET", invoicesPath(null)));
    const accepted = await api("POST", `/api/customers/${enc(state.customer)}/refreshInvoices`, {
      headers: { "Idempotency-Key": idempotencyKey() },
    });
    const command = await waitForCommand(accepted.status_url);
    if (command.status === "succeeded") {
      const events = command.result ? Number(plain(command.result.events || 0)) : 1;
      await reloadUntilProjected(before, events > 0);
      setRefreshStatus(`Updated ${new Date().toLocaleTimeString("en-US")}`, "ok");
    } else if (command.status === "needs_reauth") {
      setRefreshStatus("QuickBooks needs to be reconnected.", "error");
    } else if (command.status === "failed") {
      setRefreshStatus(`Refresh failed: ${command.reason || "unknown reason"}`, "error");
    } else {
      setRefreshStatus("Still working; check again in a minute.", "busy");
    }
    await loadCustomer();
  } catch (error) {
    handleError(error);
  } finally {
    button.disabled = false;
  }
}

// ---- wiring ---------------------------------------------------------------------------------

function init() {
  takeTokenFromFragment();
  const params = new URLSearchParams(window.location.search);
  state.customer = params.get("customer");
  $("customer-input").value = state.customer || "";

  $("customer-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("customer-input").value.trim();
    if (!value) return;
    const url = new URL(window.location.href);
    url.searchParams.set("customer", value);
    history.pushState(null, "", url.pathname + url.search);
    state.customer = value;
    openCustomer();
  });
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token-input").value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    $("token-input").value = "";
    openCustomer();
  });
  $("status-filter").addEventListener("change", (event) => {
    state.status = event.target.value;
    loadInvoices().catch(handleError);
  });
  for (const button of document.querySelectorAll("button.sort")) {
    button.addEventListener("click", () => {
      const key = button.dataset.sort;
      state.sort = state.sort === key ? `-${key}` : key;
      loadInvoices().catch(handleError);
    });
  }
  $("refresh").addEventListener("click", refresh);
  $("more").addEventListener("click", () => loadMore().catch(handleError));
  openCustomer();
}

document.addEventListener("DOMContentLoaded", init);
