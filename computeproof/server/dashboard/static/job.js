// The job page's receipt panel: pin a ledger key, verify this job's receipt (fetched from
// the server, then checked here on its bytes) or any receipt file, and show each check.
import { checkReceipt, parsePublicKey } from "./verify.js";

const PIN = "computeproof.pinned-ledger-key";
const panel = document.getElementById("verify");
const pinned = document.getElementById("pinned-key");
const verdict = document.getElementById("verdict");
const checks = document.getElementById("checks");

function storedPin() {
  try { return localStorage.getItem(PIN) || ""; } catch (e) { return ""; }
}

function savePin(value) {
  try {
    if (value) localStorage.setItem(PIN, value);
    else localStorage.removeItem(PIN);
  } catch (e) { /* storage disabled: the field still holds the key for this page */ }
}

pinned.value = storedPin();
pinned.addEventListener("change", () => {
  const value = pinned.value.trim();
  try {
    if (value) parsePublicKey(value);
    savePin(value);
  } catch (e) {
    show({ ok: false, error: `not an Ed25519 public key: ${e.message}`, steps: [] }, "the pinned key");
  }
});
document.getElementById("use-site-key").addEventListener("click", () => {
  pinned.value = panel.dataset.siteKey || "";
  savePin(pinned.value);
});
document.getElementById("forget-key").addEventListener("click", () => {
  pinned.value = "";
  savePin("");
});

function show(result, what) {
  verdict.hidden = false;
  if (result.ok && result.pinned) {
    verdict.className = "verdict good";
    const r = result.report;
    verdict.textContent = `VALID: ${what} checks out: ${r.events.length} signed events of job ${r.job} (${r.jobKey}) in checkpoint ${r.checkpointSize} of ${r.origin}, signed by the pinned ledger key.`;
  } else if (result.ok) {
    verdict.className = "verdict warn";
    verdict.textContent = `CONSISTENT, NOT PINNED: ${what} is internally valid, but no ledger key is pinned, so it may have been made by anyone. Pin the key you trust and verify again.`;
  } else {
    verdict.className = "verdict bad";
    verdict.textContent = `INVALID: ${what} failed verification: ${result.error}`;
  }
  checks.replaceChildren(...result.steps.map(([id, label, status, detail]) => {
    const li = document.createElement("li");
    li.className = status;
    li.dataset.step = id;
    li.textContent = label;
    if (detail) {
      const why = document.createElement("span");
      why.className = status === "fail" ? "why" : "dim";
      if (status !== "fail") why.textContent = ` (${detail})`;
      else why.textContent = detail;
      li.appendChild(why);
    }
    return li;
  }));
  panel.dataset.result = result.ok ? (result.pinned ? "valid" : "unpinned") : "invalid";
}

async function run(getBytes, what) {
  verdict.hidden = false;
  verdict.className = "verdict";
  verdict.textContent = `verifying ${what}...`;
  checks.replaceChildren();
  panel.dataset.result = "running";
  let bytes;
  try {
    bytes = await getBytes();
  } catch (e) {
    show({ ok: false, error: `could not read ${what}: ${e.message}`, steps: [] }, what);
    return;
  }
  show(await checkReceipt(bytes, pinned.value.trim()), what);
}

document.getElementById("verify-server").addEventListener("click", () => run(async () => {
  const r = await fetch(panel.dataset.receipt, { credentials: "same-origin" });
  if (!r.ok) {
    let why = `HTTP ${r.status}`;
    try { why = (await r.json()).error || why; } catch (e) { /* not JSON */ }
    throw new Error(why);
  }
  return new Uint8Array(await r.arrayBuffer());
}, "this job's receipt"));

document.getElementById("verify-file").addEventListener("change", (ev) => {
  const file = ev.target.files[0];
  if (file) run(async () => new Uint8Array(await file.arrayBuffer()), `the file ${file.name}`);
});
