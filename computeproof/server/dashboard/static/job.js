// The job page's receipt panel: give trust roots (a pinned ledger key, trusted witnesses
// and a quorum), verify this job's receipt (fetched from the server, then checked here on
// its bytes) or any receipt file, and show each check and the root the verdict rests on.
import { checkReceipt, parseTrustRoots } from "./verify.js";

const PIN = "computeproof.pinned-ledger-key";
const WITNESSES = "computeproof.trusted-witnesses";
const QUORUM = "computeproof.witness-quorum";
const panel = document.getElementById("verify");
const pinned = document.getElementById("pinned-key");
const witnessKeys = document.getElementById("witness-keys");
const quorum = document.getElementById("quorum");
const verdict = document.getElementById("verdict");
const trustLine = document.getElementById("trust-root");
const checks = document.getElementById("checks");

function stored(name) {
  try { return localStorage.getItem(name) || ""; } catch (e) { return ""; }
}

function save(name, value) {
  try {
    if (value) localStorage.setItem(name, value);
    else localStorage.removeItem(name);
  } catch (e) { /* storage disabled: the fields still hold the roots for this page */ }
}

const given = () => ({
  ledgerKey: pinned.value.trim(),
  witnesses: witnessKeys.value.split("\n"),
  quorum: quorum.value.trim(),
});

pinned.value = stored(PIN);
witnessKeys.value = stored(WITNESSES);
quorum.value = stored(QUORUM);

// the roots are checked as they are entered, and kept (in this browser) only when well formed
async function remember() {
  try {
    await parseTrustRoots(given());
  } catch (e) {
    show({ verdict: "error", error: e.message, steps: [] }, "the trust roots");
    return;
  }
  save(PIN, pinned.value.trim());
  save(WITNESSES, witnessKeys.value.trim());
  save(QUORUM, quorum.value.trim());
}
for (const input of [pinned, witnessKeys, quorum]) input.addEventListener("change", remember);

document.getElementById("use-site-key").addEventListener("click", () => {
  pinned.value = panel.dataset.siteKey || "";
  remember();
});
document.getElementById("forget-key").addEventListener("click", () => {
  pinned.value = "";
  save(PIN, "");
});
document.getElementById("forget-witnesses").addEventListener("click", () => {
  witnessKeys.value = "";
  quorum.value = "";
  save(WITNESSES, "");
  save(QUORUM, "");
});

function anchorsText(report) {
  const n = report.anchors.length;
  if (!n) return "";
  return ` ${n} public anchor${n === 1 ? "" : "s"} of a later or the same checkpoint checked offline (the chain itself is not consulted here).`;
}

function show(result, what) {
  verdict.hidden = false;
  trustLine.hidden = true;
  trustLine.textContent = "";
  const r = result.report;
  if (result.verdict === "valid") {
    // green only when a root the viewer gave vouches for the ledger key
    verdict.className = "verdict good";
    verdict.textContent = `VALID: ${what} checks out: ${r.events.length} signed events of job ${r.job} (${r.jobKey}) in checkpoint ${r.checkpointSize} of ${r.origin}, and what you trust vouches for its ledger key.${anchorsText(r)}`;
    trustLine.hidden = false;
    trustLine.textContent = `Trust root: ledger key ${r.trust.ledgerKey} trusted: ${r.trust.roots.join("; ")}.`;
  } else if (result.verdict === "untrusted") {
    verdict.className = "verdict warn";
    verdict.textContent = `UNTRUSTED: ${what} is valid only under its own ledger key ${r.trust.ledgerKey}, which nothing you trust vouches for, so anyone holding a key could have made it. Pin the ledger key you trust, or give witness keys, and verify again.`;
    trustLine.hidden = false;
    trustLine.textContent = "Trust root: none given.";
  } else if (result.verdict === "error") {
    verdict.className = "verdict bad";
    verdict.textContent = `CANNOT VERIFY: ${what}: ${result.error}`;
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
  panel.dataset.roots = r && r.trust ? r.trust.roots.join(" | ") : "";
  panel.dataset.result = result.verdict;
}

async function run(getBytes, what) {
  verdict.hidden = false;
  verdict.className = "verdict";
  verdict.textContent = `verifying ${what}...`;
  trustLine.hidden = true;
  checks.replaceChildren();
  panel.dataset.result = "running";
  let bytes;
  try {
    bytes = await getBytes();
  } catch (e) {
    show({ verdict: "error", error: `could not read it: ${e.message}`, steps: [] }, what);
    return;
  }
  show(await checkReceipt(bytes, given()), what);
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
