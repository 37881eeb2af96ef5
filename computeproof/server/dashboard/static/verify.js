// The receipt verifier, in the browser: a line-by-line mirror of computeproof/bundle.py
// verify_bundle (and envelope.py, checkpoint.py with its witness cosignatures, merkle.py,
// canonical.py, privacy.py, keys.py, trust.py, witness/logkey.py and anchors/verify.py
// that it calls), in the same order, with the same checks, verdicts and messages.
// Nothing here trusts the server that served the page: every check runs on the receipt's
// bytes, with WebCrypto (Ed25519, SHA-256), against the trust roots the viewer gives (a
// pinned ledger key, witnesses and a quorum).
//
// JSON is parsed by this module's own parser, which keeps what Python's json module
// keeps and JSON.parse loses: integers beyond 2**53 (BigInt), floats as floats (1.0 is
// not 1), NaN and Infinity, lone surrogates, objects as Maps in insertion order.
// Known divergences from the Python verifier: none in verdicts on the tests' corpus
// (tests/unit/computeproof/server/dashboard/test_dashboard_browser.py); JSON syntax error
// messages are Python's in form, not always in position; nesting deeper than Python's
// recursion limit is refused here, a crash there.

export const FORMAT = "computeproof.receipt/v1";
const STATEMENT_TYPE = "https://in-toto.io/Statement/v1";
const PREDICATE_TYPE = "https://computeproof.dev/slurm-job-event/v1";
const PAYLOAD_TYPE = "application/vnd.in-toto+json";
const EVENT_SCHEMA = "computeproof.event/v1";
const EVENT_TYPES = ["scheduled", "started", "progress", "artifact", "node_done", "completed",
  "final_state"];
const EVENT_FIELDS = ["schema", "id", "type", "cluster", "job", "job_id", "run", "host", "seq",
  "time"];
const INDEX_CONTEXT = "computeproof receipt index v1\n";
const MAX_SAFE = 2n ** 53n - 1n;
const MAX_TREE_SIZE = 2n ** 64n - 1n;
const MAX_SIGNATURES = 100;
const SIGNATURE_PREFIX = "\u2014 ";
const ED25519_PREFIX = "ed25519:";

// -- errors: the Python tree, where it matters for which `except` catches what ----------

export class ReceiptError extends Error {}
export class BundleError extends ReceiptError {}
export class CanonicalError extends ReceiptError {}
export class SignatureError extends ReceiptError {}
export class UnknownKeyError extends SignatureError {}
export class KeyError_ extends ReceiptError {}
export class ProofError extends ReceiptError {}
export class CheckpointError extends ReceiptError {}
// a Python built-in exception (ValueError, TypeError, KeyError...) that verify_bundle
// turns into "malformed receipt: <type>: <message>"
export class PyError extends Error {
  constructor(type, message) { super(message); this.pyType = type; }
}
class JSONDecodeError extends PyError {
  constructor(msg, text, pos) {
    const cps = Array.from(text.slice(0, pos));
    const p = cps.length;
    const before = cps.join("");
    const line = before.split("\n").length;
    const col = line === 1 ? p + 1 : p - before.lastIndexOf("\n");
    super("JSONDecodeError", `${msg}: line ${line} column ${col} (char ${p})`);
  }
}

// -- Python values ------------------------------------------------------------------------

export class PyFloat {
  constructor(value, text) { this.value = value; this.text = text; }
}

const isDict = (v) => v instanceof Map;
const isList = (v) => Array.isArray(v);
const isStr = (v) => typeof v === "string";
const isInt = (v) => typeof v === "bigint" || (typeof v === "number" && Number.isInteger(v));
const big = (v) => (typeof v === "boolean" ? BigInt(v ? 1 : 0) : BigInt(v));
const codePoints = (s) => Array.from(s);
const cpLen = (s) => codePoints(s).length;
const cpSlice = (s, a, b) => codePoints(s).slice(a, b).join("");
const dictGet = (d, k, dflt = undefined) => (d.has(k) ? d.get(k) : dflt);
const setEq = (keys, want) => keys.length === want.length && want.every((k) => keys.includes(k));

function pyFloatRepr(x) {
  if (Number.isNaN(x)) return "nan";
  if (x === Infinity) return "inf";
  if (x === -Infinity) return "-inf";
  if (x === 0) return Object.is(x, -0) ? "-0.0" : "0.0";
  const [mant, expText] = x.toExponential().split("e");
  const exp = Number(expText);
  const digits = mant.replace("-", "").replace(".", "");
  const sign = x < 0 ? "-" : "";
  if (exp >= -5 && exp < 16) {
    if (exp < 0) return `${sign}0.${"0".repeat(-exp - 1)}${digits}`;
    if (digits.length <= exp + 1) return `${sign}${digits}${"0".repeat(exp + 1 - digits.length)}.0`;
    return `${sign}${digits.slice(0, exp + 1)}.${digits.slice(exp + 1)}`;
  }
  const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
  const e = Math.abs(exp) < 10 ? `0${Math.abs(exp)}` : `${Math.abs(exp)}`;
  return `${sign}${m}e${exp < 0 ? "-" : "+"}${e}`;
}

const PY_SPACE = new Set([..."\t\n\v\f\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000"]);
for (let c = 0x2000; c <= 0x200a; c++) PY_SPACE.add(String.fromCharCode(c));
const NON_PRINTABLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}\p{Zs}]/u;
const isPrintableChar = (ch) => ch === " " || !NON_PRINTABLE.test(ch);

function pyStrRepr(s) {
  const quote = s.includes("'") && !s.includes('"') ? '"' : "'";
  let out = quote;
  for (const ch of codePoints(s)) {
    const c = ch.codePointAt(0);
    if (ch === quote || ch === "\\") out += "\\" + ch;
    else if (ch === "\t") out += "\\t";
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (c < 0x20 || c === 0x7f) out += "\\x" + c.toString(16).padStart(2, "0");
    else if (c < 0x7f) out += ch;
    else if (isPrintableChar(ch) && !(c >= 0xd800 && c <= 0xdfff)) out += ch;
    else if (c <= 0xff) out += "\\x" + c.toString(16).padStart(2, "0");
    else if (c <= 0xffff) out += "\\u" + c.toString(16).padStart(4, "0");
    else out += "\\U" + c.toString(16).padStart(8, "0");
  }
  return out + quote;
}

// Python's repr() of a parsed JSON value
export function pyRepr(v) {
  if (v === null || v === undefined) return "None";
  if (v === true) return "True";
  if (v === false) return "False";
  if (isStr(v)) return pyStrRepr(v);
  if (isInt(v)) return `${v}`;
  if (v instanceof PyFloat) return pyFloatRepr(v.value);
  if (isList(v)) return `[${v.map(pyRepr).join(", ")}]`;
  if (isDict(v)) return `{${[...v].map(([k, x]) => `${pyRepr(k)}: ${pyRepr(x)}`).join(", ")}}`;
  return String(v);
}

// Python's str() of a parsed JSON value
export function pyStr(v) { return isStr(v) ? v : pyRepr(v); }

function numeric(v) {
  if (typeof v === "boolean") return { n: v ? 1n : 0n };
  if (isInt(v)) return { n: BigInt(v) };
  if (v instanceof PyFloat) return { f: v.value };
  return null;
}

// Python's == between parsed JSON values (1 == 1.0 == True; dicts ignore key order)
export function pyEq(a, b) {
  const na = numeric(a), nb = numeric(b);
  if (na || nb) {
    if (!na || !nb) return false;
    if ("n" in na && "n" in nb) return na.n === nb.n;
    const x = "n" in na ? Number(na.n) : na.f, y = "n" in nb ? Number(nb.n) : nb.f;
    return x === y;
  }
  if (a === null || a === undefined || b === null || b === undefined) {
    return (a === null || a === undefined) && (b === null || b === undefined);
  }
  if (isStr(a) || isStr(b)) return a === b;
  if (isList(a) && isList(b)) return a.length === b.length && a.every((x, i) => pyEq(x, b[i]));
  if (isDict(a) && isDict(b)) {
    if (a.size !== b.size) return false;
    for (const [k, v] of a) if (!b.has(k) || !pyEq(v, b.get(k))) return false;
    return true;
  }
  return false;
}

// -- JSON as Python's json module reads it ---------------------------------------------------

const WS = new Set([" ", "\t", "\n", "\r"]);
const MAX_DEPTH = 900;

// options: {float(text), int(text), constant(name)}: hooks as json.JSONDecoder's
export function parseJSON(text, options = {}) {
  let i = 0;
  const n = text.length;
  const ws = () => { while (i < n && WS.has(text[i])) i++; };
  const fail = (msg, at = i) => { throw new JSONDecodeError(msg, text, at); };

  function str() {
    const start = i - 1;
    let out = "";
    for (;;) {
      if (i >= n) fail("Unterminated string starting at", start);
      const ch = text[i];
      if (ch === '"') { i++; return out; }
      if (ch === "\\") {
        const e = text[i + 1];
        if (e === undefined) fail("Unterminated string starting at", start);
        const simple = { '"': '"', "\\": "\\", "/": "/", b: "\b", f: "\f", n: "\n", r: "\r", t: "\t" };
        if (Object.hasOwn(simple, e)) { out += simple[e]; i += 2; continue; }
        if (e !== "u") fail("Invalid \\escape", i);
        const hex = text.slice(i + 2, i + 6);
        if (!/^[0-9a-fA-F]{4}$/.test(hex)) fail("Invalid \\uXXXX escape", i + 1);
        let code = parseInt(hex, 16);
        i += 6;
        if (code >= 0xd800 && code <= 0xdbff && text[i] === "\\" && text[i + 1] === "u") {
          const hex2 = text.slice(i + 2, i + 6);
          if (!/^[0-9a-fA-F]{4}$/.test(hex2)) fail("Invalid \\uXXXX escape", i + 1);
          const low = parseInt(hex2, 16);
          if (low >= 0xdc00 && low <= 0xdfff) {
            out += String.fromCharCode(code, low);
            i += 6;
            continue;
          }
        }
        out += String.fromCharCode(code);
        continue;
      }
      if (ch < " ") fail("Invalid control character at", i);
      out += ch;
      i++;
    }
  }

  function number() {
    const m = /^(-?(?:0|[1-9][0-9]*))(\.[0-9]+)?([eE][-+]?[0-9]+)?/.exec(text.slice(i, i + 4096));
    if (!m) return undefined;
    const t = m[0];
    i += t.length;
    if (m[2] || m[3]) {
      if (options.float) return options.float(t);
      return new PyFloat(Number(t), t);
    }
    if (options.int) return options.int(t);
    const b = BigInt(t);
    return b >= -MAX_SAFE && b <= MAX_SAFE ? Number(b) : b;
  }

  function value(depth) {
    if (depth > MAX_DEPTH) fail("Nesting too deep");
    if (i >= n) fail("Expecting value");
    const ch = text[i];
    if (ch === '"') { i++; return str(); }
    if (ch === "{") {
      i++;
      const obj = new Map();
      ws();
      if (text[i] === "}") { i++; return obj; }
      for (;;) {
        if (text[i] !== '"') fail("Expecting property name enclosed in double quotes");
        i++;
        const key = str();
        ws();
        if (text[i] !== ":") fail("Expecting ':' delimiter");
        i++;
        ws();
        obj.set(key, value(depth + 1));
        ws();
        if (text[i] === "}") { i++; return obj; }
        if (text[i] !== ",") fail("Expecting ',' delimiter");
        i++;
        ws();
        if (text[i] !== '"') fail("Expecting property name enclosed in double quotes");
      }
    }
    if (ch === "[") {
      i++;
      const arr = [];
      ws();
      if (text[i] === "]") { i++; return arr; }
      for (;;) {
        arr.push(value(depth + 1));
        ws();
        if (text[i] === "]") { i++; return arr; }
        if (text[i] !== ",") fail("Expecting ',' delimiter");
        i++;
        ws();
      }
    }
    if (text.startsWith("null", i)) { i += 4; return null; }
    if (text.startsWith("true", i)) { i += 4; return true; }
    if (text.startsWith("false", i)) { i += 5; return false; }
    for (const [name, v] of [["NaN", NaN], ["Infinity", Infinity], ["-Infinity", -Infinity]]) {
      if (text.startsWith(name, i)) {
        i += name.length;
        return options.constant ? options.constant(name) : new PyFloat(v, name);
      }
    }
    const num = number();
    if (num === undefined) fail("Expecting value");
    return num;
  }

  ws();
  const v = value(0);
  ws();
  if (i !== n) fail("Extra data");
  return v;
}

// bytes -> text as json.loads(bytes) decodes it (json.detect_encoding)
export function decodeJSONBytes(b) {
  const starts = (...xs) => xs.every((x, k) => b[k] === x);
  let enc = "utf-8";
  let skip = 0;
  if (starts(0, 0, 0xfe, 0xff)) { enc = "utf-32be"; skip = 4; }
  else if (starts(0xff, 0xfe, 0, 0)) { enc = "utf-32le"; skip = 4; }
  else if (starts(0xfe, 0xff)) { enc = "utf-16be"; skip = 2; }
  else if (starts(0xff, 0xfe)) { enc = "utf-16le"; skip = 2; }
  else if (starts(0xef, 0xbb, 0xbf)) { enc = "utf-8"; skip = 3; }
  else if (b.length >= 4) {
    if (!b[0]) enc = b[1] ? "utf-16be" : "utf-32be";
    else if (!b[1]) enc = b[2] || b[3] ? "utf-16le" : "utf-32le";
  } else if (b.length === 2) {
    if (!b[0]) enc = "utf-16be";
    else if (!b[1]) enc = "utf-16le";
  }
  const body = b.subarray(skip);
  // json.loads decodes with errors="surrogatepass": lone surrogates pass, as in Python
  if (enc.startsWith("utf-32")) return decodeUTF32(body, enc === "utf-32le");
  if (enc.startsWith("utf-16")) return decodeUTF16(body, enc === "utf-16le");
  return decodeUTF8(body);
}

const decodeError = (codec, at, why) => new PyError("UnicodeDecodeError",
  `'${codec}' codec can't decode byte 0x${at}: ${why}`);

// CPython's UTF-8 decoder: the same acceptance, the same error range and message;
// surrogatepass lets ED A0..BF xx (an encoded surrogate) through
function decodeUTF8(b, surrogatepass = true) {
  const units = [];
  let out = "";
  const cont = (y) => y !== undefined && y >= 0x80 && y <= 0xbf;
  const fail = (start, end, why) => {
    const what = end - start === 1 ? `byte 0x${b[start].toString(16).padStart(2, "0")} in position ${start}`
      : `bytes in position ${start}-${end - 1}`;
    return new PyError("UnicodeDecodeError", `'utf-8' codec can't decode ${what}: ${why}`);
  };
  for (let k = 0; k < b.length;) {
    const x = b[k];
    let need, lo = 0x80, hi = 0xbf;
    if (x < 0x80) { units.push(x); k++; continue; }
    if (x >= 0xc2 && x <= 0xdf) need = 1;
    else if (x >= 0xe0 && x <= 0xef) {
      need = 2;
      if (x === 0xe0) lo = 0xa0;
      if (x === 0xed && !surrogatepass) hi = 0x9f;
    } else if (x >= 0xf0 && x <= 0xf4) { need = 3; if (x === 0xf0) lo = 0x90; if (x === 0xf4) hi = 0x8f; }
    else throw fail(k, k + 1, "invalid start byte");
    let c = x & (need === 1 ? 0x1f : need === 2 ? 0x0f : 0x07);
    for (let j = 1; j <= need; j++) {
      const y = b[k + j];
      if (y === undefined) throw fail(k, b.length, "unexpected end of data");
      if (j === 1 ? y < lo || y > hi : !cont(y)) throw fail(k, k + j, "invalid continuation byte");
      c = (c << 6) | (y & 0x3f);
    }
    k += need + 1;
    units.push(c);
    if (units.length >= 4096) { out += String.fromCodePoint(...units); units.length = 0; }
  }
  // String.fromCodePoint takes lone surrogates (0xd800..0xdfff) as they are
  return out + String.fromCodePoint(...units);
}

function decodeUTF16(b, little) {
  if (b.length % 2) throw new PyError("UnicodeDecodeError", "'utf-16' codec can't decode: truncated data");
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let out = "";
  for (let k = 0; k < b.length; k += 2) out += String.fromCharCode(dv.getUint16(k, little));
  return out;
}

function decodeUTF32(b, little) {
  if (b.length % 4) throw new PyError("UnicodeDecodeError", "'utf-32' codec can't decode: truncated data");
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let out = "";
  for (let k = 0; k < b.length; k += 4) {
    const c = dv.getUint32(k, little);
    if (c > 0x10ffff) {
      throw new PyError("UnicodeDecodeError", `'utf-32' codec can't decode bytes in position ${k}-${k + 3}: code point not in range(0x110000)`);
    }
    out += String.fromCodePoint(c);
  }
  return out;
}

// -- bytes and hashes ---------------------------------------------------------------------------

const enc = new TextEncoder();
const utf8 = (s) => enc.encode(s);
const isWellFormed = (s) => (typeof s.isWellFormed === "function" ? s.isWellFormed()
  : !/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(s));

// UTF-8 with lone surrogates encoded as themselves (Python's "surrogatepass")
function wtf8(s) {
  if (isWellFormed(s)) return utf8(s);
  const out = [];
  for (let k = 0; k < s.length; k++) {
    let c = s.charCodeAt(k);
    if (c >= 0xd800 && c <= 0xdbff && k + 1 < s.length) {
      const d = s.charCodeAt(k + 1);
      if (d >= 0xdc00 && d <= 0xdfff) { c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00); k++; }
    }
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return new Uint8Array(out);
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const bytesEq = (a, b) => a.length === b.length && a.every((x, k) => x === b[k]);

export async function sha256(data) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", data));
}

export async function ed25519Verify(publicRaw, signature, message) {
  try {
    const key = await crypto.subtle.importKey("raw", publicRaw, { name: "Ed25519" }, false, ["verify"]);
    return await crypto.subtle.verify({ name: "Ed25519" }, key, signature, message);
  } catch (e) {
    if (e instanceof DOMException && e.name === "NotSupportedError") throw e;
    return false; // a malformed key or signature: keys.verify returns False too
  }
}

// -- base64: binascii.a2b_base64, strict or not, byte for byte -----------------------------

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64_VALUE = new Map([...B64].map((c, k) => [c, k]));

function a2bBase64(text, strict) {
  if (!/^[\x00-\x7f]*$/.test(text)) {
    throw new PyError("ValueError", "string argument should contain only ASCII characters");
  }
  const binErr = (m) => new PyError("binascii.Error", m);
  if (strict && text.length > 0 && text[0] === "=") throw binErr("Leading padding not allowed");
  const out = [];
  let quad = 0, left = 0, pads = 0, padding = false;
  for (let k = 0; k < text.length; k++) {
    const ch = text[k];
    if (ch === "=") {
      padding = true;
      if (quad >= 2 && quad + ++pads >= 4) {
        if (strict && k + 1 < text.length) throw binErr("Excess data after padding");
        return new Uint8Array(out);
      }
      continue;
    }
    const v = B64_VALUE.get(ch);
    if (v === undefined) {
      if (strict) throw binErr("Only base64 data is allowed");
      continue;
    }
    if (strict && padding) throw binErr("Discontinuous padding not allowed");
    pads = 0;
    if (quad === 0) { quad = 1; left = v; }
    else if (quad === 1) { quad = 2; out.push(((left << 2) | (v >> 4)) & 255); left = v & 15; }
    else if (quad === 2) { quad = 3; out.push(((left << 4) | (v >> 2)) & 255); left = v & 3; }
    else { quad = 0; out.push(((left << 6) | v) & 255); left = 0; }
  }
  if (quad !== 0) {
    if (quad === 1) {
      throw binErr("Invalid base64-encoded string: number of data characters "
        + `(${Math.floor(out.length / 3) * 4 + 1}) cannot be 1 more than a multiple of 4`);
    }
    throw binErr("Incorrect padding");
  }
  return new Uint8Array(out);
}

// base64.b64decode(text, validate=True)
function b64decodeValidate(text) {
  if (!/^[\x00-\x7f]*$/.test(text)) {
    throw new PyError("ValueError", "string argument should contain only ASCII characters");
  }
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text)) throw new PyError("binascii.Error", "Non-base64 digit found");
  return a2bBase64(text, false);
}

export function b64encode(bytes) {
  let s = "";
  for (let k = 0; k < bytes.length; k += 3) {
    const a = bytes[k], b = bytes[k + 1], c = bytes[k + 2];
    s += B64[a >> 2] + B64[((a & 3) << 4) | ((b ?? 0) >> 4)];
    s += b === undefined ? "=" : B64[((b & 15) << 2) | ((c ?? 0) >> 6)];
    s += c === undefined ? "=" : B64[c & 63];
  }
  return s;
}

const ZERO_TAIL_1 = new Set("AEIMQUYcgkosw048"); // before "=": 2 bits over, zero
const ZERO_TAIL_2 = new Set("AQgw"); // before "==": 4 bits over, zero

// envelope.b64decode_strict: standard base64, padded, in its one canonical spelling
export function b64decodeStrict(text, what) {
  let raw;
  try {
    raw = a2bBase64(text, true);
  } catch (e) {
    if (e instanceof PyError) throw new CanonicalError(`${what} is not valid base64: ${e.message}`);
    throw e;
  }
  const n = text.length;
  const two = n >= 2 && text[n - 2] === "=";
  if (n !== Math.floor((raw.length + 2) / 3) * 4 || (n && text[n - 1] === "="
      && !(two ? ZERO_TAIL_2 : ZERO_TAIL_1).has(text[two ? n - 3 : n - 2]))) {
    throw new CanonicalError(`${what} is not in canonical base64 form`);
  }
  return raw;
}

// -- keys (keys.py) -----------------------------------------------------------------------

// envelope.b64decode_dsse: a DSSE field in standard or URL-safe base64 (the DSSE spec: a
// verifier accepts either), one alphabet, padded and canonical; standard is tried first
export function b64decodeDsse(text, what) {
  try {
    return b64decodeStrict(text, what);
  } catch (e) {
    if (!(e instanceof CanonicalError) || !/[-_]/.test(text) || /[+/]/.test(text)) throw e;
  }
  return b64decodeStrict(text.replace(/-/g, "+").replace(/_/g, "/"), what);
}

function pyStrip(s) {
  const cps = codePoints(s);
  let a = 0, b = cps.length;
  while (a < b && PY_SPACE.has(cps[a])) a++;
  while (b > a && PY_SPACE.has(cps[b - 1])) b--;
  return cps.slice(a, b).join("");
}

export function parsePublicKey(text) {
  text = pyStrip(text);
  if (text.startsWith(ED25519_PREFIX)) text = text.slice(ED25519_PREFIX.length);
  let raw;
  try {
    raw = b64decodeValidate(text);
  } catch (e) {
    if (e instanceof PyError) throw new KeyError_(`public key ${pyRepr(cpSlice(text, 0, 20))}... is not base64`);
    throw e;
  }
  if (raw.length !== 32) throw new KeyError_(`public key has ${raw.length} bytes; an Ed25519 key has 32`);
  return raw;
}

export const keyId = async (raw) => hex(await sha256(raw));
export const formatPublicKey = (raw) => ED25519_PREFIX + b64encode(raw);

// -- RFC 8785 canonical JSON (canonical.py) -----------------------------------------------

function jcsString(s) {
  let out = '"';
  for (let k = 0; k < s.length; k++) {
    const ch = s[k];
    const c = s.charCodeAt(k);
    if (ch === '"') out += '\\"';
    else if (ch === "\\") out += "\\\\";
    else if (c < 0x20) {
      out += { 8: "\\b", 9: "\\t", 10: "\\n", 12: "\\f", 13: "\\r" }[c]
        ?? "\\u" + c.toString(16).padStart(4, "0");
    } else out += ch;
  }
  return out + '"';
}

const utf16Less = (a, b) => (a < b ? -1 : a > b ? 1 : 0); // JS compares UTF-16 code units

function jcs(v) {
  if (isStr(v)) return jcsString(v);
  if (v === null) return "null";
  if (v === true) return "true";
  if (v === false) return "false";
  if (isInt(v)) {
    const b = BigInt(v);
    if (b < -MAX_SAFE || b > MAX_SAFE) {
      throw new CanonicalError(`integer ${b} is outside the I-JSON range +-(2**53-1)`);
    }
    return b.toString();
  }
  if (isDict(v)) {
    const keys = [...v.keys()].sort(utf16Less);
    return "{" + keys.map((k) => jcsString(k) + ":" + jcs(v.get(k))).join(",") + "}";
  }
  if (isList(v)) return "[" + v.map(jcs).join(",") + "]";
  if (v instanceof PyFloat) {
    throw new CanonicalError(`float ${pyFloatRepr(v.value)} found: canonical events carry integers in base units`);
  }
  throw new CanonicalError(`type ${typeof v} cannot be written as canonical JSON`);
}

// canonical.canonical_bytes
export function canonicalBytes(v) {
  const text = jcs(v);
  if (!isWellFormed(text)) {
    throw new CanonicalError("string is not valid Unicode (lone surrogate?): 'utf-8' codec can't encode a surrogate");
  }
  return utf8(text);
}

// -- events and envelopes (event.py, envelope.py) ------------------------------------------

const jobKey = (cluster, jobId, run) => `${cluster}/${jobId}#${run}`;

async function eventId(cluster, job, jobId, run, type, host, seq) {
  const esc = (s) => jcsString(s).slice(1, -1);
  const identity = `["${EVENT_SCHEMA}","${esc(cluster)}","${esc(job)}",${jobId},${run},"${esc(type)}","${esc(host)}",${seq}]`;
  return hex(await sha256(wtf8(identity)));
}

async function checkEvent(event) {
  if (!isDict(event)) throw new CanonicalError("event is not a JSON object");
  for (const name of [...EVENT_FIELDS, "payload"]) {
    if (!event.has(name)) throw new CanonicalError(`event lacks field ${pyRepr(name)}`);
  }
  if (!pyEq(event.get("schema"), EVENT_SCHEMA)) {
    throw new CanonicalError(`event schema ${pyRepr(event.get("schema"))} is not '${EVENT_SCHEMA}'`);
  }
  const type = event.get("type");
  if (!isStr(type) || !EVENT_TYPES.includes(type)) {
    throw new CanonicalError(`unknown event type ${pyRepr(type)}`);
  }
  for (const name of ["cluster", "job", "host", "time"]) {
    const v = event.get(name);
    if (!(truthy(v) && isStr(v))) throw new CanonicalError(`event field ${pyRepr(name)} must be a non-empty string`);
  }
  for (const name of ["job_id", "run", "seq"]) {
    const v = event.get(name);
    if (!(isInt(v) && big(v) >= 0n)) throw new CanonicalError(`event field ${pyRepr(name)} must be a non-negative integer`);
  }
  if (!isDict(event.get("payload"))) throw new CanonicalError("event payload must be a JSON object");
  const want = await eventId(event.get("cluster"), event.get("job"), event.get("job_id"),
    event.get("run"), type, event.get("host"), event.get("seq"));
  if (!pyEq(event.get("id"), want)) {
    throw new CanonicalError(`event id ${pyRepr(event.get("id"))} does not match its fields (${want})`);
  }
  return event;
}

function truthy(v) {
  if (v === null || v === undefined || v === false) return false;
  if (isStr(v) || isList(v)) return v.length > 0;
  if (isDict(v)) return v.size > 0;
  if (isInt(v)) return big(v) !== 0n;
  if (v instanceof PyFloat) return v.value !== 0;
  return true;
}

function pae(payload) {
  const t = utf8(PAYLOAD_TYPE);
  return concat(utf8(`DSSEv1 ${t.length} `), t, utf8(` ${payload.length} `), payload);
}

function rejectingHooks() {
  return {
    float: (t) => { throw new CanonicalError(`float ${t} found: canonical events carry integers in base units`); },
    constant: (name) => { throw new CanonicalError(`${name} is not valid canonical JSON`); },
    int: (t) => {
      const b = BigInt(t);
      if (b < -MAX_SAFE || b > MAX_SAFE) throw new CanonicalError(`integer ${t} is outside the I-JSON range +-(2**53-1)`);
      return Number(b);
    },
  };
}

function loadsCanonical(bytes, what) {
  try {
    return parseJSON(decodeUTF8(bytes, false), rejectingHooks());
  } catch (e) {
    if (e instanceof PyError) throw new CanonicalError(`${what} is not JSON: ${e.message}`);
    throw e;
  }
}

const ENV_PREFIX = utf8('{"payload":"');
const ENV_MID = utf8(`","payloadType":"${PAYLOAD_TYPE}","signatures":[{"keyid":"`);
const ENV_SIG = utf8('","sig":"');
const ENV_SUFFIX = utf8('"}]}');
const ascii = (b) => new TextDecoder("latin1").decode(b);
const isAsciiBytes = (b) => b.every((x) => x < 0x80);

function indexOfBytes(hay, needle, from) {
  outer: for (let k = from; k + needle.length <= hay.length; k++) {
    for (let j = 0; j < needle.length; j++) if (hay[k + j] !== needle[j]) continue outer;
    return k;
  }
  return -1;
}

// envelope._split_envelope: (payload b64, key id, sig b64) of the one canonical shape
function splitEnvelope(data) {
  const n = data.length;
  if (n < ENV_PREFIX.length + ENV_SUFFIX.length || !bytesEq(data.subarray(0, ENV_PREFIX.length), ENV_PREFIX)
      || !bytesEq(data.subarray(n - ENV_SUFFIX.length), ENV_SUFFIX)) return null;
  const mid = indexOfBytes(data, ENV_MID, ENV_PREFIX.length);
  if (mid < 0) return null;
  const restStart = mid + ENV_MID.length, restEnd = n - ENV_SUFFIX.length;
  if (restEnd < restStart) return null;
  const rest = data.subarray(restStart, restEnd);
  if (!bytesEq(rest.subarray(64, 64 + ENV_SIG.length), ENV_SIG)) return null;
  const payload = data.subarray(ENV_PREFIX.length, mid), sig = rest.subarray(64 + ENV_SIG.length);
  if (!isAsciiBytes(payload) || !isAsciiBytes(sig)) return null;
  const kid = rest.subarray(0, 64);
  if (!isAsciiBytes(kid)) return null;
  return [ascii(payload), ascii(kid), ascii(sig)];
}

async function openEnvelope(text) {
  const data = utf8(text);
  const parts = splitEnvelope(data);
  if (parts !== null) { // envelope.py's fast path, in its order
    const [payloadB64, kid, sigB64] = parts;
    if (!/^[0-9a-f]*$/.test(kid)) throw new SignatureError("envelope signature key id is not a 64-digit hex SHA-256");
    const payload = b64decodeDsse(payloadB64, "envelope payload");
    const signature = b64decodeDsse(sigB64, "envelope signature");
    return openStatement(payload, kid, signature);
  }
  // envelope.py's exact path (_open_envelope_json)
  const env = loadsCanonical(data, "envelope");
  if (!isDict(env) || !setEq([...env.keys()], ["payload", "payloadType", "signatures"])) {
    throw new CanonicalError("envelope must have exactly payload, payloadType, signatures");
  }
  if (!pyEq(env.get("payloadType"), PAYLOAD_TYPE)) {
    throw new CanonicalError(`envelope payloadType ${pyRepr(env.get("payloadType"))} is not ${PAYLOAD_TYPE}`);
  }
  const sigs = env.get("signatures");
  if (!isList(sigs) || sigs.length !== 1 || !isDict(sigs[0])) {
    throw new SignatureError("envelope must carry exactly one signature");
  }
  if (!setEq([...sigs[0].keys()], ["keyid", "sig"])) {
    throw new SignatureError("envelope signature must have exactly keyid and sig");
  }
  const kid = sigs[0].get("keyid"), sigB64 = sigs[0].get("sig"), payloadB64 = env.get("payload");
  if (!isStr(kid) || kid.length !== 64 || !/^[0-9a-f]*$/.test(kid)) {
    throw new SignatureError("envelope signature key id is not a 64-digit hex SHA-256");
  }
  if (!isStr(sigB64) || !isStr(payloadB64)) {
    throw new CanonicalError("envelope payload and signature must be base64 strings");
  }
  const payload = b64decodeDsse(payloadB64, "envelope payload");
  const signature = b64decodeDsse(sigB64, "envelope signature");
  const expected = `{"payload":"${payloadB64}","payloadType":"${PAYLOAD_TYPE}",`
    + `"signatures":[{"keyid":"${kid}","sig":"${sigB64}"}]}`;
  if (expected !== text) throw new CanonicalError("envelope bytes are not canonical JSON (RFC 8785)");
  return openStatement(payload, kid, signature);
}

async function openStatement(payload, kid, signature) {
  const st = loadsCanonical(payload, "envelope payload");
  if (!isDict(st) || !pyEq(dictGet(st, "_type", null), STATEMENT_TYPE)) {
    throw new CanonicalError("envelope payload is not an in-toto Statement v1");
  }
  if (!setEq([...st.keys()], ["_type", "subject", "predicateType", "predicate"])) {
    throw new CanonicalError("statement must have exactly _type, subject, predicateType, predicate");
  }
  if (!pyEq(st.get("predicateType"), PREDICATE_TYPE)) {
    throw new CanonicalError(`statement predicateType ${pyRepr(st.get("predicateType"))} is unknown`);
  }
  const event = await checkEvent(st.get("predicate"));
  const name = "slurm-job:" + jobKey(event.get("cluster"), event.get("job_id"), event.get("run"));
  const want = [new Map([["name", name], ["digest", new Map([["sha256", hex(await sha256(utf8(name)))]])]])];
  if (!pyEq(st.get("subject"), want)) {
    throw new CanonicalError(`statement subject does not name its event's job (${name})`);
  }
  let canonical;
  try { canonical = bytesEq(canonicalBytes(st), payload); } catch (e) { canonical = false; }
  if (!canonical) throw new CanonicalError("statement bytes are not canonical JSON (RFC 8785)");
  return { event, keyId: kid, signature, signed: pae(payload) };
}

async function verifyEnvelope(text, keys) {
  const opened = await openEnvelope(text);
  const pub = keys.get(opened.keyId);
  if (pub === undefined) {
    throw new UnknownKeyError(`signed by key ${opened.keyId.slice(0, 16)}..., which is not enrolled `
      + "in this ledger (or revoked); enroll it with `computeproof keys enroll`");
  }
  if (!(await ed25519Verify(pub, opened.signature, opened.signed))) {
    throw new SignatureError(`signature by key ${opened.keyId.slice(0, 16)}... does not verify `
      + `for event ${opened.event.get("id")}`);
  }
  return opened;
}

// -- RFC 9162 inclusion proofs (merkle.py) -------------------------------------------------

const bitLength = (x) => (x === 0n ? 0 : x.toString(2).length);
const bitCount = (x) => [...x.toString(2)].filter((c) => c === "1").length;

export async function leafHash(data) { return sha256(concat(new Uint8Array([0]), data)); }
export async function nodeHash(l, r) { return sha256(concat(new Uint8Array([1]), l, r)); }

function pathLength(index, size) {
  const inner = bitLength(index ^ (size - 1n));
  return inner + bitCount(index >> BigInt(inner));
}

export async function verifyInclusion(leaf, index, size, proof, root) {
  index = BigInt(index);
  size = BigInt(size);
  if (index < 0n || size < 0n) throw new ProofError(`leaf index ${index} and tree size ${size} must not be negative`);
  if (index >= size) throw new ProofError(`leaf index ${index} is out of range for tree size ${size}`);
  if (leaf.length !== 32) throw new ProofError(`leaf hash is ${leaf.length} bytes, not 32`);
  const expected = pathLength(index, size);
  if (proof.length !== expected) {
    throw new ProofError(`inclusion proof for leaf ${index} in tree size ${size} has ${proof.length} hashes, expected ${expected}`);
  }
  proof.forEach((h, k) => {
    if (h.length !== 32) throw new ProofError(`inclusion proof hash ${k} is ${h.length} bytes, not 32`);
  });
  let fn = index, sn = size - 1n, r = leaf;
  for (const p of proof) {
    if (sn === 0n) throw new ProofError("inclusion proof is longer than the path to the root");
    if ((fn & 1n) || fn === sn) {
      r = await nodeHash(p, r);
      if (!(fn & 1n)) {
        while (!(fn & 1n) && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) throw new ProofError("inclusion proof is shorter than the path to the root");
  if (!bytesEq(r, root)) {
    throw new ProofError(`inclusion proof for leaf ${index} does not lead to the given root of tree size ${size}`);
  }
}

// merkle.verify_consistency: the tree (size2, root2) extends the tree (size1, root1)
export async function verifyConsistency(size1, size2, proof, root1, root2) {
  size1 = BigInt(size1);
  size2 = BigInt(size2);
  if (size1 < 0n || size2 < 0n) throw new ProofError(`tree sizes ${size1} and ${size2} must not be negative`);
  if (size1 > size2) throw new ProofError(`size1 ${size1} is larger than size2 ${size2}: a log never shrinks`);
  if (size1 === 0n) throw new ProofError("consistency proofs need size1 > 0: every tree extends the empty tree");
  if (size1 === size2) {
    if (proof.length) {
      throw new ProofError(`sizes are equal (${size1}) so the consistency proof must be empty, got ${proof.length} hashes`);
    }
    if (!bytesEq(root1, root2)) throw new ProofError(`sizes are equal (${size1}) but the roots differ`);
    return;
  }
  const level = BigInt(bitLength(size1 & -size1) - 1);
  const index = (size1 - 1n) >> level;
  const expected = pathLength(index, ((size2 - 1n) >> level) + 1n) + (index ? 1 : 0);
  if (proof.length !== expected) {
    throw new ProofError(`consistency proof from size ${size1} to ${size2} has ${proof.length} hashes, expected ${expected}`);
  }
  proof.forEach((h, k) => {
    if (h.length !== 32) throw new ProofError(`consistency proof hash ${k} is ${h.length} bytes, not 32`);
  });
  const path = [...proof];
  if ((size1 & (size1 - 1n)) === 0n) path.unshift(root1);
  let fn = size1 - 1n, sn = size2 - 1n;
  while (fn & 1n) { fn >>= 1n; sn >>= 1n; }
  let fr = path[0], sr = path[0];
  for (const c of path.slice(1)) {
    if (sn === 0n) throw new ProofError("consistency proof is longer than the path to the root");
    if ((fn & 1n) || fn === sn) {
      fr = await nodeHash(c, fr);
      sr = await nodeHash(c, sr);
      if (!(fn & 1n)) {
        while (!(fn & 1n) && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
      }
    } else {
      sr = await nodeHash(sr, c);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) throw new ProofError("consistency proof is shorter than the path to the root");
  if (!bytesEq(fr, root1)) throw new ProofError(`consistency proof does not lead to root1 of tree size ${size1}`);
  if (!bytesEq(sr, root2)) throw new ProofError(`consistency proof does not lead to root2 of tree size ${size2}`);
}

// -- C2SP signed notes and checkpoints (checkpoint.py) ---------------------------------------

function checkKeyName(name) {
  if (!name || name.includes("+") || codePoints(name).some((c) => PY_SPACE.has(c) || !isPrintableChar(c))) {
    throw new CheckpointError(`key name ${pyRepr(name)} must be non-empty, without spaces, '+' or control characters`);
  }
}

function checkText(text, what) {
  if (/[\x00-\x09\x0b-\x1f]/.test(text)) {
    throw new CheckpointError(`${what} contains an ASCII control character other than newline`);
  }
  if (!isWellFormed(text)) throw new CheckpointError(`${what} is not valid UTF-8 text`);
}

const ED25519_TYPE = 0x01;
const COSIGNATURE_TYPE = 0x04;

// checkpoint._typed_key_hash: SHA-256(name || 0x0A || type || key)[:4]
async function typedKeyHash(name, type, pub) {
  checkKeyName(name);
  if (pub.length !== 32) throw new CheckpointError(`Ed25519 public key is ${pub.length} bytes, not 32`);
  return (await sha256(concat(utf8(name), new Uint8Array([0x0a, type]), pub))).slice(0, 4);
}

const keyHash = (name, pub) => typedKeyHash(name, ED25519_TYPE, pub);

function noteB64(text, what) {
  try {
    return b64decodeValidate(text);
  } catch (e) {
    if (e instanceof PyError) throw new CheckpointError(`${what} is not valid base64`);
    throw e;
  }
}

function splitNote(note) {
  checkText(note, "signed note");
  const cut = note.lastIndexOf("\n\n");
  if (cut < 0) throw new CheckpointError("signed note has no blank line before its signatures");
  const text = note.slice(0, cut + 1), block = note.slice(cut + 2);
  if (!block.endsWith("\n")) throw new CheckpointError("signed note must end with a newline after its last signature");
  const lines = block.slice(0, -1).split("\n");
  if (lines.length > MAX_SIGNATURES) {
    throw new CheckpointError(`signed note has ${lines.length} signatures, more than ${MAX_SIGNATURES}`);
  }
  const sigs = [];
  for (const line of lines) {
    if (!line.startsWith(SIGNATURE_PREFIX)) {
      throw new CheckpointError(`signature line ${pyRepr(cpSlice(line, 0, 40))} does not start with an em dash`);
    }
    const fields = line.slice(SIGNATURE_PREFIX.length).split(" ");
    if (fields.length !== 2) {
      throw new CheckpointError(`signature line ${pyRepr(cpSlice(line, 0, 40))} is not '\u2014 <name> <signature>'`);
    }
    const [name, encoded] = fields;
    checkKeyName(name);
    const sig = noteB64(encoded, `signature of key ${pyRepr(name)}`);
    if (sig.length <= 4) throw new CheckpointError(`signature of key ${pyRepr(name)} is too short`);
    sigs.push([name, sig]);
  }
  return [text, sigs];
}

async function verifyNote(text, sigs, name, pub) {
  const kid = await keyHash(name, pub);
  let verified = 0;
  for (const [signer, sig] of sigs) {
    if (signer !== name || !bytesEq(sig.slice(0, 4), kid)) continue;
    if (sig.length !== 68) throw new CheckpointError(`signature of key ${name} has the wrong length`);
    if (!(await ed25519Verify(pub, sig.slice(4), utf8(text)))) {
      throw new CheckpointError(`signature of key ${name} does not verify`);
    }
    verified += 1;
  }
  if (verified) return;
  if (sigs.some(([signer]) => signer === name)) {
    throw new CheckpointError(`signed note has a signature named ${name} but by another key (key ID is not ${hex(kid)})`);
  }
  const byCodePoint = (a, b) => {
    const x = codePoints(a).map((c) => c.codePointAt(0)), y = codePoints(b).map((c) => c.codePointAt(0));
    for (let k = 0; k < Math.min(x.length, y.length); k++) if (x[k] !== y[k]) return x[k] - y[k];
    return x.length - y.length;
  };
  const names = [...new Set(sigs.map(([s]) => s))].sort(byCodePoint).join(", ");
  throw new CheckpointError(`signed note has no signature by key ${name} (signed by: ${names})`);
}

function parseBody(text) {
  const lines = text.slice(0, -1).split("\n");
  if (lines.length < 3) throw new CheckpointError("checkpoint needs an origin, a tree size and a root hash line");
  if (lines.length > 3) throw new CheckpointError("checkpoint has extension lines, which this ledger never writes");
  const [origin, sizeText, rootText] = lines;
  if (!/^[0-9]+$/.test(sizeText) || (sizeText.startsWith("0") && sizeText !== "0")) {
    throw new CheckpointError(`checkpoint tree size ${pyRepr(cpSlice(sizeText, 0, 40))} is not a decimal without leading zeros`);
  }
  const root = noteB64(rootText, "checkpoint root hash");
  if (root.length !== 32) throw new CheckpointError(`checkpoint root hash is ${root.length} bytes, not 32`);
  if (b64encode(root) !== rootText) throw new CheckpointError("checkpoint root hash is not canonical base64");
  if (!origin || origin.includes("\n")) throw new CheckpointError("checkpoint origin must be one non-empty line");
  checkText(origin, "checkpoint origin");
  const size = BigInt(sizeText);
  if (size > MAX_TREE_SIZE) throw new CheckpointError(`checkpoint size ${size} is out of range`);
  return { origin, size, root };
}

export async function openCheckpoint(note, name, pub, origin) {
  const [body, sigs] = splitNote(note);
  const cp = parseBody(body);
  if (origin !== undefined && cp.origin !== origin) {
    throw new CheckpointError(`checkpoint is from log ${pyRepr(cpSlice(cp.origin, 0, 100))}, not from ${pyRepr(origin)}`);
  }
  await verifyNote(body, sigs, name, pub);
  if (`${cp.origin}\n${cp.size}\n${b64encode(cp.root)}\n` !== body) {
    throw new CheckpointError("checkpoint body does not re-encode to the signed bytes");
  }
  return cp;
}

// -- verifier keys (checkpoint.py _parse_vkey) -------------------------------------------------

// "<name>+<hex key ID>+<base64(type || key)>": [name, raw key]; the name and the key ID end
// at the first two '+' (the base64 key may hold more), as in Go's note package
async function parseVkey(text, keyType, kind) {
  const t = pyStrip(text);
  const a = t.indexOf("+"), b = a < 0 ? -1 : t.indexOf("+", a + 1);
  if (b < 0) throw new CheckpointError("verifier key must be <name>+<hex key ID>+<base64 key>");
  const name = t.slice(0, a), kid = t.slice(a + 1, b), encoded = t.slice(b + 1);
  checkKeyName(name);
  if (cpLen(kid) !== 8 || !/^[0-9a-f]*$/.test(kid)) {
    throw new CheckpointError(`verifier key ID ${pyRepr(kid)} must be 8 lowercase hex digits`);
  }
  const key = noteB64(encoded, "verifier key");
  if (key.length !== 33 || key[0] !== keyType) {
    throw new CheckpointError(`verifier key is not an ${kind} key (type 0x${keyType.toString(16).padStart(2, "0")} and 32 bytes)`);
  }
  const pub = key.slice(1);
  if (hex(await typedKeyHash(name, keyType, pub)) !== kid) {
    throw new CheckpointError(`verifier key ID ${kid} does not match its name and key`);
  }
  return [name, pub];
}

// checkpoint.parse_verifier_key: a log's (Ed25519 note) verifier key
export const parseVerifierKey = (text) => parseVkey(text, ED25519_TYPE, "Ed25519 note");

// checkpoint.parse_cosigner_key: a witness's verifier key, type 0x04: {name, publicRaw}
export async function parseCosignerKey(text) {
  const [name, publicRaw] = await parseVkey(text, COSIGNATURE_TYPE, "Ed25519 cosignature");
  return { name, publicRaw };
}

// -- witness cosignatures (checkpoint.py verify_cosignatures, C2SP tlog-cosignature) ---------

const MAX_TIMESTAMP = 2n ** 63n - 1n;

// The cosigners (by name) whose cosignature/v1 line on the note verifies, with its time.
// Lines of other keys are ignored; a line of a listed key that does not verify rejects it.
export async function verifyCosignatures(note, cosigners) {
  const [text, sigs] = splitNote(note);
  parseBody(text);
  const found = new Map();
  for (const cosigner of cosigners) {
    const kid = await typedKeyHash(cosigner.name, COSIGNATURE_TYPE, cosigner.publicRaw);
    for (const [signer, blob] of sigs) {
      if (signer !== cosigner.name || !bytesEq(blob.slice(0, 4), kid)) continue;
      if (blob.length !== 4 + 8 + 64) throw new CheckpointError(`cosignature of witness ${signer} has the wrong length`);
      const timestamp = new DataView(blob.buffer, blob.byteOffset + 4, 8).getBigUint64(0, false);
      if (timestamp > MAX_TIMESTAMP) throw new CheckpointError(`cosignature of witness ${signer}: timestamp out of range`);
      const message = utf8(`cosignature/v1\ntime ${timestamp}\n${text}`);
      if (!(await ed25519Verify(cosigner.publicRaw, blob.slice(12), message))) {
        throw new CheckpointError(`cosignature of witness ${signer} does not verify`);
      }
      const before = found.get(cosigner.name) ?? 0n;
      found.set(cosigner.name, timestamp > before ? timestamp : before);
    }
  }
  return found;
}

// -- witness log-key statements (witness/logkey.py) ------------------------------------------

const STATEMENT_HEADER = "computeproof-witness-log-key/v1\n";

async function parseStatement(witness, text, signature) {
  if (!text.startsWith(STATEMENT_HEADER) || !text.endsWith("\n")) {
    throw new CheckpointError(`witness ${witness}: not a ${STATEMENT_HEADER.trim()} statement`);
  }
  const lines = text.slice(STATEMENT_HEADER.length, -1).split("\n");
  if (lines.length < 2 || lines.length > 17) {
    throw new CheckpointError(`witness ${witness}: a log key statement has an origin and 1-16 keys`);
  }
  const logKeys = [];
  for (const line of lines.slice(1)) logKeys.push(await parseVerifierKey(line));
  return { witness, origin: lines[0], logKeys, text, signature };
}

// logkey.statement_from_json: a carried statement record (its signature checked later)
async function statementFromJSON(record) {
  if (!isDict(record)) throw new CheckpointError("a witness statement must be an object");
  const witness = dictGet(record, "witness", null), text = dictGet(record, "statement", null);
  const sig = dictGet(record, "signature", null);
  if (!(isStr(witness) && isStr(text) && isStr(sig))) {
    throw new CheckpointError("a witness statement has witness, statement and signature strings");
  }
  let signature;
  try {
    signature = b64decodeValidate(sig);
  } catch (e) {
    if (e instanceof PyError) throw new CheckpointError(`witness ${witness}: statement signature is not base64`);
    throw e;
  }
  return parseStatement(witness, text, signature);
}

// -- trust roots (trust.py) ------------------------------------------------------------------

// What a verifier trusts: ledger keys ({publicRaw, source}), witnesses ({name, publicRaw})
// and a quorum of them (0: all)
export function trustRoots({ ledgerKeys = [], witnesses = [], quorum = 0 } = {}) {
  return { ledgerKeys, witnesses, quorum };
}

const rootsGiven = (roots) => roots.ledgerKeys.length > 0 || roots.witnesses.length > 0;
const needed = (roots) => roots.quorum || roots.witnesses.length;

// Names of the trusted witnesses whose signed statement names ledgerKey as a key of origin
async function vouching(witnesses, origin, ledgerKey, statements) {
  const out = new Set();
  const byName = new Map(witnesses.map((w) => [w.name, w]));
  for (const record of statements) {
    let st;
    try {
      st = await statementFromJSON(record);
    } catch (e) {
      if (e instanceof CheckpointError) continue; // ignored, as unknown signatures are
      throw e;
    }
    const w = byName.get(st.witness);
    if (w !== undefined && st.origin === origin
        && st.logKeys.some(([name, raw]) => bytesEq(raw, ledgerKey) && name === origin)
        && st.witness === w.name && (await ed25519Verify(w.publicRaw, st.signature, utf8(st.text)))) {
      out.add(w.name);
    }
  }
  return out;
}

// trust.decide: the verdict on the receipt's ledger key against the roots:
// {trusted, ledgerKey, roots: [in words], witnesses: [names], problem}
export async function decide(roots, origin, ledgerKey, note, statements) {
  const decision = { trusted: false, ledgerKey: formatPublicKey(ledgerKey), roots: [], witnesses: [], problem: null };
  if (!rootsGiven(roots)) return decision;
  const problems = [];
  let keyTrusted = false;
  if (roots.ledgerKeys.length) {
    const match = roots.ledgerKeys.find((k) => bytesEq(k.publicRaw, ledgerKey));
    if (match === undefined) {
      problems.push(`the ledger key ${decision.ledgerKey} is not a trusted ledger key (${roots.ledgerKeys[0].source})`);
    } else {
      keyTrusted = true;
      decision.roots.push(match.source);
    }
  }
  if (roots.witnesses.length) {
    let cosigned;
    try {
      cosigned = await verifyCosignatures(note, roots.witnesses);
    } catch (e) {
      if (!(e instanceof CheckpointError)) throw e;
      problems.push(`witness cosignatures: ${e.message}`);
      cosigned = new Map();
    }
    const vouch = await vouching(roots.witnesses, origin, ledgerKey, statements);
    const counted = roots.witnesses.filter((w) => cosigned.has(w.name) && (keyTrusted || vouch.has(w.name)))
      .map((w) => w.name);
    if (counted.length >= needed(roots)) {
      decision.witnesses = counted;
      const what = "cosigned the checkpoint" + (keyTrusted ? "" : " and vouch for the key");
      decision.roots.push(`witnesses ${counted.join(", ")} ${what} (quorum ${needed(roots)} of ${roots.witnesses.length})`);
    } else {
      const missing = roots.witnesses.filter((w) => !counted.includes(w.name)).map((w) => w.name);
      const why = keyTrusted ? "" : `; ${vouch.size} signed a statement naming this ledger key`;
      problems.push(`${counted.length} of the trusted witnesses vouch for this checkpoint, quorum `
        + `${needed(roots)} (not: ${missing.join(", ")}; ${cosigned.size} cosigned it${why})`);
    }
  }
  if (problems.length) {
    decision.problem = problems.join("; ");
    decision.roots = [];
    return decision;
  }
  decision.trusted = true;
  return decision;
}

// -- private fields (privacy.py) ------------------------------------------------------------

const isCommitment = (v) => isDict(v) && setEq([...v.keys()], ["sha256_commitment"]);

function fromHex(s) {
  // bytes.fromhex: ASCII hex pairs, ASCII whitespace allowed between pairs
  const space = new Set([" ", "\t", "\n", "\v", "\f", "\r"]);
  const digit = (c) => (c !== undefined && /^[0-9a-fA-F]$/.test(c) ? parseInt(c, 16) : -1);
  const out = [];
  let k = 0;
  while (k < s.length) {
    if (space.has(s[k])) {
      while (k < s.length && space.has(s[k])) k++;
      if (k >= s.length) break;
    }
    const hi = digit(s[k]);
    if (hi < 0) throw new PyError("ValueError", `non-hexadecimal number found in fromhex() arg at position ${k}`);
    const lo = digit(s[k + 1]);
    if (lo < 0) throw new PyError("ValueError", `non-hexadecimal number found in fromhex() arg at position ${k + 1}`);
    out.push(hi * 16 + lo);
    k += 2;
  }
  return new Uint8Array(out);
}

async function checkOpening(committed, opening) {
  if (!isCommitment(committed)) throw new ProofError("field is not a commitment");
  const salt = dictGet(opening, "salt", null);
  if (!isStr(salt)) throw new ProofError("opening has no salt");
  let saltBytes;
  try { saltBytes = fromHex(salt); } catch (e) { throw new ProofError("opening salt is not hex"); }
  const value = dictGet(opening, "value", null);
  const digest = hex(await sha256(concat(saltBytes, canonicalBytes(value))));
  if (!pyEq(digest, committed.get("sha256_commitment"))) {
    throw new ProofError("opening does not match the commitment");
  }
  return value;
}

// -- the bundle (bundle.py) -------------------------------------------------------------------

const KIND_NAME = { int: "int", str: "str", list: "list", dict: "dict" };
const KIND_TEST = { int: isInt, str: isStr, list: isList, dict: isDict };

function field(obj, name, kind, where) {
  if (!isDict(obj) || !obj.has(name)) throw new BundleError(`${where}: missing field '${name}'`);
  const v = obj.get(name);
  if (!KIND_TEST[kind](v)) throw new BundleError(`${where}: field '${name}' must be ${KIND_NAME[kind]}`);
  return v;
}

// -- anchors a receipt carries (anchors/__init__.py AnchorRecord.from_json, anchors/verify.py)

const ANCHOR_KINDS = ["evm", "numbers", "numbers-event"];
const CHECKPOINT_KINDS = ["evm", "numbers"];
const RECORD_FIELDS = [["kind", "str"], ["target", "str"], ["origin", "str"], ["size", "int"],
  ["root", "str"], ["checkpoint_sha256", "str"], ["registry", "dict"], ["anchored_at", "str"]];
const EVM_FIELDS = [["chain_id", "int"], ["contract", "str"], ["tx_hash", "str"], ["block_number", "int"],
  ["block_hash", "str"], ["log_index", "int"], ["recorder", "str"], ["asset_cid", "str"]];

// AnchorRecord.from_json; an AnchorError there is a BundleError here (the caller's prefix)
function anchorRecord(data, where) {
  const fail = (msg) => new BundleError(`${where}: ${msg}`);
  if (!isDict(data)) throw fail("anchor record must be an object");
  for (const [name, kind] of RECORD_FIELDS) {
    if (!KIND_TEST[kind](dictGet(data, name, null))) {
      throw fail(`anchor record: '${name}' is missing or not a ${KIND_NAME[kind]}`);
    }
  }
  const kind = data.get("kind");
  if (!ANCHOR_KINDS.includes(kind)) throw fail(`anchor record: unknown kind ${pyRepr(cpSlice(kind, 0, 40))}`);
  let root;
  try {
    root = b64decodeValidate(data.get("root"));
  } catch (e) {
    // binascii.Error, or ValueError for text that is not ASCII: both "not base64"
    if (e instanceof PyError && (e.pyType === "binascii.Error" || e.pyType === "ValueError")) {
      throw fail("anchor record: root is not base64");
    }
    throw e;
  }
  if (root.length !== 32) throw fail("anchor record: root is not 32 bytes");
  return { kind, target: data.get("target"), origin: data.get("origin"), size: big(data.get("size")),
    sizeValue: data.get("size"), root: data.get("root"), checkpointSha256: data.get("checkpoint_sha256"),
    registry: data.get("registry") };
}

// verify._hex: "0x" and exactly 2 * size hex digits (no whitespace)
function isHexOf(value, size) {
  return isStr(value) && value.startsWith("0x") && cpLen(value) === 2 + 2 * size &&
    /^[0-9a-fA-F]*$/.test(value.slice(2));
}

function checkRegistry(record, where) {
  const reg = record.registry;
  if (record.kind === "evm") {
    for (const [name, kind] of EVM_FIELDS) {
      if (!KIND_TEST[kind](dictGet(reg, name, null))) {
        throw new BundleError(`${where}: registry field '${name}' is missing or not ${KIND_NAME[kind]}`);
      }
    }
    for (const [name, size] of [["tx_hash", 32], ["block_hash", 32], ["contract", 20], ["recorder", 20]]) {
      if (!isHexOf(reg.get(name), size)) throw new BundleError(`${where}: registry field '${name}' is not ${size} bytes of hex`);
    }
  } else if (record.kind === "numbers") {
    const nid = dictGet(reg, "nid", null);
    if (!isStr(nid) || !nid) throw new BundleError(`${where}: a Numbers anchor needs its NID`);
    if (reg.has("commit_tx") && !isHexOf(reg.get("commit_tx"), 32)) {
      throw new BundleError(`${where}: registry field 'commit_tx' is not 32 bytes of hex`);
    }
  }
}

// verify.check_receipt_anchors: each anchor against the receipt's checkpoint cp and ledger
// key, offline: [{kind, target, size, registry}]
export async function checkReceiptAnchors(anchors, cp, ledgerKey) {
  if (anchors === null || anchors === undefined) return [];
  if (!isList(anchors)) throw new BundleError("anchors must be a list");
  const out = [];
  for (let i = 0; i < anchors.length; i++) {
    const entry = anchors[i];
    let where = `anchors[${i}]`;
    if (!isDict(entry)) throw new BundleError(`${where}: must be an object`);
    const record = anchorRecord(dictGet(entry, "record", null), where);
    where = `anchors[${i}] (${record.kind} ${cpSlice(record.target, 0, 80)}, size ${record.size})`;
    if (!CHECKPOINT_KINDS.includes(record.kind)) throw new BundleError(`${where}: a receipt carries checkpoint anchors only`);
    if (record.origin !== cp.origin) {
      throw new BundleError(`${where}: anchors log ${pyRepr(cpSlice(record.origin, 0, 80))}, not ${pyRepr(cp.origin)}`);
    }
    if (record.size < cp.size) throw new BundleError(`${where}: anchors a checkpoint older than the receipt's (${cp.size})`);
    checkRegistry(record, where);
    const note = dictGet(entry, "checkpoint", null), proofB64 = dictGet(entry, "consistency_proof", null);
    if (!isStr(note) || !isList(proofB64)) {
      throw new BundleError(`${where}: needs the anchored checkpoint and a consistency proof`);
    }
    let anchored;
    try {
      anchored = await openCheckpoint(note, cp.origin, ledgerKey, cp.origin);
      const proof = proofB64.map((h) => b64decodeStrict(pyStr(h), "consistency proof hash"));
      await verifyConsistency(cp.size, anchored.size, proof, cp.root, anchored.root);
    } catch (e) {
      if (e instanceof ReceiptError || (e instanceof PyError && e.pyType === "binascii.Error")) {
        throw new BundleError(`${where}: ${e.message}`);
      }
      throw e;
    }
    const body = `${anchored.origin}\n${anchored.size}\n${b64encode(anchored.root)}\n`;
    const sha = hex(await sha256(utf8(body)));
    if (record.size !== anchored.size || record.root !== b64encode(anchored.root) || record.checkpointSha256 !== sha) {
      throw new BundleError(`${where}: the record does not describe the anchored checkpoint`);
    }
    out.push({ kind: record.kind, target: record.target, size: record.sizeValue, registry: record.registry });
  }
  return out;
}

// the steps a verification passes through, in order, for the page to show
export const STEPS = [
  ["format", "Receipt: JSON, format computeproof.receipt/v1, its job and log"],
  ["pinned", "Ledger key: the receipt's ledger key is the key you pinned"],
  ["checkpoint", "Checkpoint: C2SP signed note, Ed25519 signature by the ledger key; its size and root are the receipt's"],
  ["keys", "Host keys: each key id is the SHA-256 of its public key"],
  ["envelopes", "Events: DSSE envelopes in RFC 8785 canonical form, in-toto statements, Ed25519 signatures over the DSSE PAE by enrolled host keys"],
  ["inclusion", "Inclusion: RFC 9162 Merkle inclusion proofs lead to the checkpoint's root"],
  ["job", "Job: every event belongs to this job run, from a host its key may sign for, once"],
  ["disclosures", "Private fields: disclosed values open their signed SHA-256 commitments"],
  ["index", "Complete: the ledger's signed index lists exactly these events of this job"],
  ["witnesses", "Witnesses: enough of the witnesses you trust cosigned the checkpoint (C2SP tlog-cosignature) and, unless you pinned the ledger key, signed that the receipt's ledger key is this log's"],
  ["anchors", "Anchors: each anchored checkpoint is signed by the ledger key, extends this receipt's checkpoint (RFC 9162 consistency proof) and is the one its registry record names"],
];

class Trace {
  constructor(onStep) { this.status = new Map(); this.detail = new Map(); this.current = null; this.onStep = onStep; }
  at(step) { this.current = step; }
  pass(step, detail = "") {
    this.status.set(step, "pass");
    if (detail) this.detail.set(step, detail);
    if (this.onStep) this.onStep(step, "pass", detail);
  }
}

// bundle.verify_bundle: the report, or a BundleError naming what and where. The report's
// trust says whether its ledger key is trusted: by trustedLedgerKey (a pinned key, raw
// bytes) or roots (trustRoots()); with neither, a receipt that verifies is untrusted.
// Roots it does not meet are a BundleError.
export async function verifyBundle(data, trustedLedgerKey = null, roots = null, trace = new Trace()) {
  if (trustedLedgerKey !== null) {
    const pinned = { publicRaw: trustedLedgerKey, source: "pinned with --ledger-key" };
    roots = trustRoots({ ledgerKeys: [pinned], witnesses: roots ? roots.witnesses : [], quorum: roots ? roots.quorum : 0 });
  }
  try {
    return await verifyBundleInner(data, roots || trustRoots(), trace);
  } catch (e) {
    if (e instanceof BundleError) throw e;
    if (e instanceof PyError) throw new BundleError(`malformed receipt: ${e.pyType}: ${e.message}`);
    throw e;
  }
}

async function verifyBundleInner(data, roots, trace) {
  trace.at("format");
  let bundle;
  try {
    bundle = parseJSON(typeof data === "string" ? data : decodeJSONBytes(data));
  } catch (e) {
    if (e instanceof PyError) throw new BundleError(`receipt is not JSON: ${e.message}`);
    throw e;
  }
  if (!isDict(bundle) || !pyEq(dictGet(bundle, "format", null), FORMAT)) {
    throw new BundleError(`not a receipt bundle (format must be '${FORMAT}')`);
  }
  const job = field(bundle, "job", "dict", "receipt");
  const cluster = pyStr(field(job, "cluster", "str", "job"));
  const jobIdV = field(job, "job_id", "int", "job");
  const runV = field(job, "run", "int", "job");
  const wantKey = jobKey(cluster, big(jobIdV), big(runV));
  const log = field(bundle, "log", "dict", "receipt");
  const origin = pyStr(field(log, "origin", "str", "log"));
  let ledgerKey, root;
  try {
    ledgerKey = parsePublicKey(pyStr(field(log, "ledger_key", "str", "log")));
    root = b64decodeStrict(pyStr(field(log, "root", "str", "log")), "log root");
  } catch (e) {
    if (e instanceof ReceiptError || (e instanceof PyError && e.pyType === "binascii.Error")) {
      throw new BundleError(`log: ${e.message}`);
    }
    throw e;
  }
  trace.pass("format", `job ${wantKey}`);
  trace.at("pinned");
  if (roots.ledgerKeys.length && roots.ledgerKeys.every((k) => !bytesEq(k.publicRaw, ledgerKey))) {
    throw new BundleError("log: the bundle's ledger key is not the trusted ledger key");
  }
  if (roots.ledgerKeys.length) trace.pass("pinned", formatPublicKey(ledgerKey));
  trace.at("checkpoint");
  let cp, note;
  try {
    note = pyStr(field(log, "checkpoint", "str", "log"));
    cp = await openCheckpoint(note, origin, ledgerKey, origin);
  } catch (e) {
    if (e instanceof ReceiptError) throw new BundleError(`log checkpoint: ${e.message}`);
    throw e;
  }
  // read only with witness roots; anything else there is ignored, as unknown fields are
  let statements = dictGet(log, "witness_statements", null);
  statements = isList(statements) ? statements : [];
  if (cp.size !== big(field(log, "size", "int", "log")) || !bytesEq(cp.root, root)) {
    throw new BundleError("log: size or root differ from the signed checkpoint");
  }
  trace.pass("checkpoint", `${origin}, tree size ${cp.size}`);
  trace.at("keys");
  const keys = new Map(), hosts = new Map();
  const keyList = field(bundle, "keys", "list", "receipt");
  for (let i = 0; i < keyList.length; i++) {
    const k = keyList[i];
    const where = `keys[${i}]`;
    let raw;
    try {
      raw = parsePublicKey(pyStr(field(k, "public_key", "str", where)));
    } catch (e) {
      if (e instanceof ReceiptError) throw new BundleError(`${where}: ${e.message}`);
      throw e;
    }
    const kid = await keyId(raw);
    if (kid !== field(k, "key_id", "str", where)) throw new BundleError(`${where}: key id does not match the public key`);
    keys.set(kid, raw);
    hosts.set(kid, field(k, "hosts", "list", where).map(pyStr));
  }
  trace.pass("keys", `${keys.size} host key${keys.size === 1 ? "" : "s"}`);
  const entries = field(bundle, "entries", "list", "receipt");
  trace.at("envelopes");
  if (!entries.length) throw new BundleError("receipt has no entries");
  const report = { jobKey: wantKey, checkpointSize: cp.size, job: pyStr(field(job, "job", "str", "job")),
    events: [], disclosed: new Map(), lifecycle: new Map(), origin, ledgerKey: formatPublicKey(ledgerKey) };
  const seen = new Set();
  let lastIndex = -1n;
  for (let i = 0; i < entries.length; i++) {
    const entry = entries[i];
    trace.at("envelopes");
    const indexV = field(entry, "leaf_index", "int", `entries[${i}]`);
    const index = big(indexV);
    const where = `entries[${i}] (leaf ${index})`;
    if (index <= lastIndex) throw new BundleError(`${where}: entries are not in increasing leaf order`);
    lastIndex = index;
    const envText = field(entry, "envelope", "str", where);
    if (!isWellFormed(envText)) throw new BundleError(`${where}: envelope is not valid Unicode text`);
    let opened;
    try {
      opened = await verifyEnvelope(envText, keys);
      trace.at("inclusion");
      const proof = field(entry, "inclusion_proof", "list", where).map((h) => b64decodeStrict(pyStr(h), "inclusion proof hash"));
      await verifyInclusion(await leafHash(utf8(envText)), index, cp.size, proof, cp.root);
    } catch (e) {
      if (e instanceof ReceiptError || (e instanceof PyError && e.pyType === "binascii.Error")) {
        throw new BundleError(`${where}: ${e.message}`);
      }
      throw e;
    }
    trace.at("job");
    const event = opened.event;
    const allowed = hosts.get(opened.keyId);
    if (!allowed.includes("*") && !allowed.includes(event.get("host"))) {
      throw new BundleError(`${where}: signing key is not enrolled for host ${event.get("host")}`);
    }
    const ek = jobKey(event.get("cluster"), event.get("job_id"), event.get("run"));
    if (ek !== wantKey) throw new BundleError(`${where}: event belongs to ${ek}, not ${wantKey}`);
    if (seen.has(event.get("id"))) throw new BundleError(`${where}: event ${event.get("id")} appears twice`);
    seen.add(event.get("id"));
    // as bundle.py: the entry's index, never a leaf_index key the event carries itself
    report.events.push({ leafIndex: index, entryIndex: index, event });
    const type = event.get("type");
    report.lifecycle.set(type, (report.lifecycle.get(type) || 0) + 1);
  }
  const n = report.events.length;
  trace.pass("envelopes", `${n} signed event${n === 1 ? "" : "s"}`);
  trace.pass("inclusion", `${n} inclusion proof${n === 1 ? "" : "s"} against tree size ${cp.size}`);
  trace.pass("job", `${n} event${n === 1 ? "" : "s"} of ${wantKey}`);
  trace.at("disclosures");
  const disclosures = dictGet(bundle, "disclosures", new Map());
  if (!isDict(disclosures)) throw new BundleError("disclosures must be an object");
  const byId = new Map(report.events.map((e) => [pyStr(e.event.get("id")), e.event]));
  let opened = 0;
  for (const [eid, fields] of disclosures) {
    if (!byId.has(eid) || !isDict(fields)) throw new BundleError(`disclosures: event ${eid} is not in this receipt`);
    const payload = byId.get(eid).get("payload");
    for (const [name, opening] of fields) {
      if (!isDict(opening)) throw new BundleError(`disclosures[${eid}][${name}]: opening must be an object`);
      let value;
      try {
        value = await checkOpening(dictGet(payload, name, null), opening);
      } catch (e) {
        if (e instanceof ReceiptError) throw new BundleError(`disclosures[${eid}][${name}]: ${e.message}`);
        throw e;
      }
      if (!report.disclosed.has(eid)) report.disclosed.set(eid, new Map());
      report.disclosed.get(eid).set(name, value);
      opened += 1;
    }
  }
  if (opened) trace.pass("disclosures", `${opened} disclosed value${opened === 1 ? "" : "s"}`);
  trace.at("index");
  await checkIndex(bundle, report, ledgerKey);
  trace.pass("index", `${n} of ${n} events listed`);
  trace.at("witnesses");
  try {
    report.trust = await decide(roots, origin, ledgerKey, note, statements);
  } catch (e) {
    if (e instanceof ReceiptError) throw new BundleError(`log checkpoint: ${e.message}`);
    throw e;
  }
  if (report.trust.problem !== null) throw new BundleError(`trust: ${report.trust.problem}`);
  if (roots.witnesses.length) trace.pass("witnesses", report.trust.roots[report.trust.roots.length - 1]);
  trace.at("anchors");
  report.anchors = await checkReceiptAnchors(dictGet(bundle, "anchors", null), cp, ledgerKey);
  const a = report.anchors.length;
  if (a) {
    trace.pass("anchors", `${a} anchor${a === 1 ? "" : "s"}: ${report.anchors.map((x) => `${x.kind} ${x.target} at size ${x.size}`).join("; ")}`);
  }
  return report;
}

function receiptIndex(bundle, leafIndices, eventIds) {
  const job = bundle.get("job"), log = bundle.get("log");
  const pick = new Map();
  for (const k of ["cluster", "job", "job_id", "run", "job_key"]) {
    if (!job.has(k)) throw new PyError("KeyError", pyRepr(k));
    pick.set(k, job.get(k));
  }
  return new Map([
    ["origin", log.get("origin")],
    ["checkpoint_size", log.get("size")],
    ["root", log.get("root")],
    ["job", pick],
    ["entries", leafIndices.map((leaf, k) => new Map([["leaf_index", leaf], ["event_id", eventIds[k]]]))],
  ]);
}

async function checkIndex(bundle, report, ledgerKey) {
  const index = field(bundle, "index", "dict", "receipt");
  const statement = field(index, "statement", "dict", "index");
  let sig;
  try {
    sig = b64decodeStrict(pyStr(field(index, "signature", "str", "index")), "index signature");
  } catch (e) {
    if (e instanceof ReceiptError) throw new BundleError(`index: ${e.message}`);
    throw e;
  }
  const message = concat(utf8(INDEX_CONTEXT), canonicalBytes(statement));
  if (!(await ed25519Verify(ledgerKey, sig, message))) {
    throw new BundleError("index: the ledger's signature over the receipt index does not verify");
  }
  const want = receiptIndex(bundle, report.events.map((e) => pyInt(e.leafIndex)),
    report.events.map((e) => pyStr(e.event.get("id"))));
  for (const name of ["origin", "checkpoint_size", "root", "job"]) {
    if (!pyEq(dictGet(statement, name, null), want.get(name))) {
      throw new BundleError(`index: the signed ${name} differs from the bundle's`);
    }
  }
  const wantEntries = want.get("entries").map((m) => new Map([["leaf_index", m.get("leaf_index")], ["event_id", m.get("event_id")]]));
  const signedEntries = dictGet(statement, "entries", null);
  if (!pyEq(signedEntries, wantEntries)) {
    let list = truthy(signedEntries) ? signedEntries : [];
    if (isDict(list)) list = [...list.keys()];
    else if (isStr(list)) list = codePoints(list);
    else if (!isList(list)) throw new PyError("TypeError", `'${pyTypeName(list)}' object is not iterable`);
    const signed = list.filter(isDict).map((e) => dictGet(e, "leaf_index", null));
    const have = new Set(report.events.map((e) => pyInt(e.leafIndex)));
    const missing = [...new Set(signed.filter((x) => isInt(x) || typeof x === "boolean").map(big))]
      .filter((x) => !have.has(x)).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    throw new BundleError("index: entries differ from the ledger's signed list of this job's events"
      + (missing.length ? ` (missing leaves [${missing.join(", ")}])` : ""));
  }
  const label = bundle.get("job").get("job_key");
  if (!pyEq(label, report.jobKey)) {
    throw new BundleError(`job: job_key ${pyRepr(label)} is not ${pyRepr(report.jobKey)}`);
  }
}

// Python's int() of a parsed JSON value
function pyInt(v) {
  if (typeof v === "boolean") return v ? 1n : 0n;
  if (isInt(v)) return BigInt(v);
  if (v instanceof PyFloat) {
    if (!Number.isFinite(v.value)) {
      throw new PyError(Number.isNaN(v.value) ? "ValueError" : "OverflowError",
        Number.isNaN(v.value) ? "cannot convert float NaN to integer" : "cannot convert float infinity to integer");
    }
    return BigInt(Math.trunc(v.value));
  }
  if (isStr(v)) {
    const t = pyStrip(v);
    if (/^[+-]?[0-9](?:_?[0-9])*$/.test(t)) return BigInt(t.replace(/_/g, ""));
    throw new PyError("ValueError", `invalid literal for int() with base 10: ${pyRepr(v)}`);
  }
  throw new PyError("TypeError", `int() argument must be a string, a bytes-like object or a real number, not '${pyTypeName(v)}'`);
}

function pyTypeName(v) {
  if (v === null || v === undefined) return "NoneType";
  if (isStr(v)) return "str";
  if (isList(v)) return "list";
  if (isDict(v)) return "dict";
  if (typeof v === "boolean") return "bool";
  if (isInt(v)) return "int";
  if (v instanceof PyFloat) return "float";
  return "object";
}

// -- what the page calls ----------------------------------------------------------------------

// The trust roots the viewer gave, as text: {ledgerKey: "ed25519:BASE64" or "", witnesses:
// [witness verifier keys], quorum: "" (all) or a number}. Throws an Error saying which is
// wrong (trust.roots_from_options' checks, in the page's words).
export async function parseTrustRoots({ ledgerKey = "", witnesses = [], quorum = "" } = {}) {
  const ledgerKeys = [];
  if (ledgerKey && ledgerKey.trim()) {
    try {
      ledgerKeys.push({ publicRaw: parsePublicKey(ledgerKey), source: "the ledger key pinned in this browser" });
    } catch (e) {
      if (e instanceof ReceiptError) throw new Error(`the pinned ledger key is not an Ed25519 public key: ${e.message}`);
      throw e;
    }
  }
  const cosigners = [];
  for (const text of witnesses.map((w) => w.trim()).filter((w) => w)) {
    try {
      cosigners.push(await parseCosignerKey(text));
    } catch (e) {
      if (!(e instanceof ReceiptError)) throw e;
      throw new Error(`witness key ${pyRepr(cpSlice(text, 0, 60))}: ${e.message}; give the witness's `
        + "verifier key as `computeproof witness serve` prints it (<name>+<key id>+<base64>)");
    }
  }
  const names = cosigners.map((w) => w.name);
  if (new Set(names).size !== names.length) throw new Error("the same witness name is given twice");
  let q = 0;
  const qText = String(quorum ?? "").trim();
  if (qText) {
    q = /^[0-9]+$/.test(qText) ? Number(qText) : NaN;
    if (!(q >= 1 && q <= cosigners.length)) {
      throw new Error(`quorum ${pyRepr(cpSlice(qText, 0, 20))}: give a number from 1 to the number of `
        + `witness keys (${cosigners.length})`);
    }
  }
  return trustRoots({ ledgerKeys, witnesses: cosigners, quorum: q });
}

// Verify a receipt (bytes or text) against the trust roots the viewer gave (see
// parseTrustRoots). Never throws: {verdict, error, steps: [[id, label, status, detail]],
// report}. verdict: "valid" (a root vouches for the ledger key: report.trust.roots says
// which), "untrusted" (valid only under the receipt's own key), "invalid", or "error" (the
// roots given are malformed: nothing was checked). status: pass, fail, skip (not reached or
// nothing to check), warn (not checked: no trust root given).
export async function checkReceipt(data, given = {}, onStep = null) {
  const trace = new Trace(onStep);
  let roots = null;
  let error = null, report = null;
  try {
    roots = await parseTrustRoots(given);
  } catch (e) {
    error = e.message;
  }
  if (roots !== null) {
    try {
      if (!globalThis.crypto || !crypto.subtle) {
        throw new Error("this page is not a secure context (HTTPS or localhost), so the browser offers no WebCrypto");
      }
      report = await verifyBundle(data, null, roots, trace);
    } catch (e) {
      error = e instanceof Error ? e.message || String(e) : String(e);
      if (e instanceof DOMException && e.name === "NotSupportedError") {
        error = "this browser's WebCrypto has no Ed25519; use a current browser, or `computeproof receipt verify`";
      }
    }
  }
  const done = error === null;
  const order = STEPS.map(([id]) => id);
  const reached = done ? order.length : trace.current === null ? -1 : order.indexOf(trace.current);
  const noRoots = roots !== null && !rootsGiven(roots);
  const steps = STEPS.map(([id, label], k) => {
    const status = trace.status.get(id), detail = trace.detail.get(id) || "";
    if (status) return [id, label, status, detail];
    if (!done && k === reached) return [id, label, "fail", error];
    if (k > reached || roots === null) return [id, label, "skip", ""];
    if (id === "pinned" && noRoots) {
      return [id, label, "warn", "no trust root given: the receipt is checked against the ledger key it "
        + "names itself, which shows it is consistent, not that the ledger you trust signed it"];
    }
    if (id === "pinned") return [id, label, "skip", "no ledger key pinned: the witnesses are the trust root"];
    if (id === "witnesses") return [id, label, "skip", "no witness keys given"];
    if (id === "disclosures") return [id, label, "skip", "none disclosed in this receipt"];
    if (id === "anchors") return [id, label, "skip", "this receipt carries no anchors"];
    return [id, label, "skip", ""];
  });
  if (!done && reached < 0) steps.unshift(["error", roots === null ? "Trust roots" : "Verification", "fail", error]);
  let verdict = "invalid";
  if (roots === null) verdict = "error";
  else if (done) verdict = report.trust.trusted ? "valid" : "untrusted";
  return { verdict, ok: done, error, steps, report };
}

// A parsed JSON value as plain JSON-able data (Maps as objects, safe BigInts as numbers,
// floats as numbers): for tests and for showing a report's parts
export function toPlain(v) {
  if (isDict(v)) return Object.fromEntries([...v].map(([k, x]) => [k, toPlain(x)]));
  if (isList(v)) return v.map(toPlain);
  if (typeof v === "bigint") return v >= -MAX_SAFE && v <= MAX_SAFE ? Number(v) : v.toString();
  if (v instanceof PyFloat) return v.value;
  if (v !== null && typeof v === "object" && Object.getPrototypeOf(v) === Object.prototype) {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toPlain(x)]));
  }
  return v;
}
