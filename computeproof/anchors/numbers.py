"""Anchoring on Numbers Mainnet through the Capture API (httpx).

The Capture API, as Numbers documents it (docs.captureapp.xyz "Initial Asset
Registration" and "Update Asset Metadata via Commits"; Numbers' capture-sdk):

    POST  {api}/assets/          multipart: asset_file, caption, headline (<= 25 chars),
                                 nit_commit_custom (JSON)         -> 201 {"id": NID, ...}
    PATCH {api}/assets/{nid}/    multipart: commit_message, nit_commit_custom (JSON,
                                 <= 10 KB), caption, headline     -> 200 {"id": NID, ...}
    GET   {history}?nid=NID      -> {"nid", "commits": [{"assetTreeCid", "txHash", "author",
                                 "committer", "timestampCreated", "action"}, ...]}
    header  Authorization: token <CAPTURE_TOKEN>
    errors  400 bad data or insufficient funds, 401 bad token, 403 not the owner,
            404 no such NID; a JSON body with "detail" (or per-field lists)

Fees: 0.1 NUM per call plus gas (docs: ~0.004 to ~0.079 NUM), paid from the token's wallet.
Hence one asset per log (or per day or month), registered once, and one update per
anchored checkpoint; never a call per event, except in the seed-compatible per-job mode
(:func:`anchor_job_events`), which costs a registration per job and an update per event.

Each update becomes a Commit on Numbers Mainnet (Jade, chain 10507) that Numbers' own
wallet sends; the commit history reports its transaction some time later. The record keeps
how many commits the asset had before ours, so the first new one is ours (only the owner's
token may update an asset): found within ``commit_wait`` seconds, or later by
:func:`refresh_commits` (`computeproof anchor refresh`). Until then the record has no
commit_tx: never a made-up one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from computeproof import merkle
from computeproof.anchors import (
    AnchoredCheckpoint,
    AnchorRecord,
    anchors_of,
)
from computeproof.canonical import canonical_str
from computeproof.errors import AnchorError

if TYPE_CHECKING:
    import httpx

    from computeproof.ledger import Ledger

API_URL = "https://api.numbersprotocol.io/api/v3"
# "Read commits via API": the endpoint Numbers' capture-sdk reads commit history from.
HISTORY_URL = (
    "https://e23hi68y55.execute-api.us-east-1.amazonaws.com/default/"
    "get-commits-storage-backend-jade-near"
)
JADE_CHAIN_ID = 10507
HEADLINE_MAX = 25
CUSTOM_MAX = 10 * 1024
FEE_NUM_PER_CALL = 0.1  # documented; plus gas per transaction
SCOPES = ("log", "month", "day")
_HINTS = {
    401: "check the Capture token (CAPTURE_TOKEN or --capture-token-file)",
    403: "this token's account does not own that asset",
    404: "no asset with that NID",
}


def _detail(response: httpx.Response) -> str:
    """The error a Capture API response carries: its "detail"/"message", else the first
    per-field error (Django REST framework's shape), else the status line."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip() or response.reason_phrase
    if isinstance(body, dict):
        for key in ("detail", "message", "error"):
            if isinstance(body.get(key), str):
                return str(body[key])[:300]
        for key, value in body.items():
            if isinstance(value, list) and value:
                return f"{key}: {str(value[0])[:300]}"
    return str(body)[:300]


class CaptureClient:
    """The Capture API calls anchoring needs. ``transport`` lets tests route to a local
    server; by default it is the real service."""

    def __init__(
        self,
        token: str,
        api_url: str = API_URL,
        history_url: str = HISTORY_URL,
        timeout: float = 60.0,
    ) -> None:
        """A client authenticating with ``token``."""
        try:
            import httpx
        except ImportError as e:
            raise AnchorError(
                "Numbers anchoring needs httpx: pip install 'computeproof[anchor]'"
            ) from e
        token = token.strip()
        if not token or not token.isascii() or not token.isprintable() or " " in token:
            raise AnchorError(
                "the Capture token must be one word of printable ASCII (is it the right file?)"
            )
        for url in (api_url, history_url):
            if not url.startswith(("http://", "https://")) or not url.isprintable():
                raise AnchorError(f"URL {url[:80]!r} must start with http:// or https://")
        self.api_url = api_url.rstrip("/")
        self.history_url = history_url
        self._http = httpx.Client(
            timeout=timeout,
            headers={"Authorization": f"token {token}", "Accept": "application/json"},
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _call(self, what: str, method: str, url: str, **kw: Any) -> Any:
        import httpx

        try:
            response = self._http.request(method, url, **kw)
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as e:
            raise AnchorError(f"{what}: cannot reach the Capture API at {url}: {e}") from e
        if not response.is_success:
            hint = _HINTS.get(response.status_code, "")
            raise AnchorError(
                f"{what}: the Capture API answered {response.status_code}: {_detail(response)}"
                + (f" ({hint})" if hint else "")
            )
        try:
            return response.json()
        except ValueError as e:
            raise AnchorError(f"{what}: the Capture API answered with no JSON") from e

    @staticmethod
    def _custom(custom: dict[str, object]) -> str:
        text = canonical_str(custom)
        if len(text.encode()) > CUSTOM_MAX:
            raise AnchorError(
                f"nit_commit_custom is {len(text.encode())} bytes; the limit is 10 KB"
            )
        return text

    @staticmethod
    def _asset(what: str, body: Any, nid: str | None = None) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("id"), str) or not body["id"]:
            raise AnchorError(f"{what}: the Capture API answered without the asset's NID")
        if nid is not None and body["id"] != nid:
            raise AnchorError(f"{what}: the Capture API answered for asset {body['id']}, not {nid}")
        return body

    def register(
        self,
        file_name: str,
        data: bytes,
        mime_type: str,
        caption: str,
        headline: str,
        custom: dict[str, object],
    ) -> dict[str, Any]:
        """Register an asset (POST /assets/); the asset as the API returned it."""
        if len(headline) > HEADLINE_MAX:
            raise AnchorError(f"headline {headline!r} is over {HEADLINE_MAX} characters")
        form = {"caption": caption, "headline": headline, "nit_commit_custom": self._custom(custom)}
        body = self._call(
            "registering the asset",
            "POST",
            f"{self.api_url}/assets/",
            data=form,
            files={"asset_file": (file_name, data, mime_type)},
        )
        return self._asset("registering the asset", body)

    def update(self, nid: str, commit_message: str, custom: dict[str, object]) -> dict[str, Any]:
        """Commit to asset ``nid`` (PATCH /assets/{nid}/); the asset as returned."""
        if not nid or "/" in nid or "?" in nid:
            raise AnchorError(f"NID {nid[:80]!r} is not an asset id")
        form = {"commit_message": commit_message, "nit_commit_custom": self._custom(custom)}
        # multipart, as documented: httpx sends multipart when files is given, so the form
        # fields go as parts of their own
        files = {k: (None, v.encode()) for k, v in form.items()}
        body = self._call(
            f"updating asset {nid}", "PATCH", f"{self.api_url}/assets/{nid}/", files=files
        )
        return self._asset(f"updating asset {nid}", body, nid)

    def history(self, nid: str) -> list[dict[str, Any]]:
        """Asset ``nid``'s commits, oldest first (by timestampCreated)."""
        body = self._call(
            f"reading the commits of {nid}", "GET", self.history_url, params={"nid": nid}
        )
        commits = body.get("commits") if isinstance(body, dict) else None
        if not isinstance(commits, list) or not all(isinstance(c, dict) for c in commits):
            raise AnchorError(f"reading the commits of {nid}: the answer has no commit list")
        return sorted(commits, key=lambda c: int(c.get("timestampCreated") or 0))


def _commit_fields(commit: dict[str, Any]) -> dict[str, object]:
    tx = commit.get("txHash")
    tree = commit.get("assetTreeCid")
    if not isinstance(tx, str) or not tx.startswith("0x") or len(tx) != 66:
        return {}
    out: dict[str, object] = {"commit_tx": tx}
    if isinstance(tree, str) and tree:
        out["asset_tree_cid"] = tree
    return out


def _our_commit(
    client: CaptureClient, nid: str, before: int, wait: float, poll: float
) -> dict[str, object]:
    """The commit our call made: the first after the ``before`` the asset had, once the
    history shows it (waiting up to ``wait`` s); {} when it does not yet."""
    deadline = time.monotonic() + wait
    while True:
        commits = client.history(nid)
        if len(commits) > before:
            return _commit_fields(commits[before])
        if time.monotonic() >= deadline:
            return {}
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))


class NumbersAnchorer:
    """Commits checkpoints to one Numbers asset per log (``scope`` "log") or per calendar
    month or day (UTC), registered on first use and updated with each checkpoint."""

    kind = "numbers"

    def __init__(
        self,
        client: CaptureClient,
        scope: str = "log",
        commit_wait: float = 0.0,
        poll_interval: float = 5.0,
        chain_id: int = JADE_CHAIN_ID,
    ) -> None:
        """``commit_wait``: seconds to wait for the commit history to show the transaction."""
        if scope not in SCOPES:
            raise AnchorError(f"anchoring scope {scope!r} is not one of {', '.join(SCOPES)}")
        self.client = client
        self.scope = scope
        self.commit_wait = commit_wait
        self.poll_interval = poll_interval
        self.chain_id = chain_id

    @property
    def target(self) -> str:
        """``numbers:<API URL>``."""
        return f"numbers:{self.client.api_url}"

    def asset_scope(self, origin: str, now: dt.datetime | None = None) -> str:
        """The asset a checkpoint goes to: the log's origin, with the month or day."""
        now = now or dt.datetime.now(dt.UTC)
        if self.scope == "month":
            return f"{origin}@{now:%Y-%m}"
        if self.scope == "day":
            return f"{origin}@{now:%Y-%m-%d}"
        return origin

    def anchor(self, cp: AnchoredCheckpoint, previous: Sequence[AnchorRecord]) -> AnchorRecord:
        """Register the scope's asset with this checkpoint, or update it with it."""
        scope = self.asset_scope(cp.origin)
        nid = next(
            (
                str(r.registry["nid"])
                for r in reversed(previous)
                if r.registry.get("asset_scope") == scope
            ),
            None,
        )
        custom = cp.commit_data()
        registry: dict[str, object] = {"asset_scope": scope, "chain_id": self.chain_id}
        if nid is None:
            data = (
                canonical_str(
                    {
                        "format": "computeproof.anchor-asset/v1",
                        "asset_scope": scope,
                        "first": custom,
                    }
                ).encode()
                + b"\n"
            )
            body = self.client.register(
                "computeproof-checkpoints.json",
                data,
                "application/json",
                caption=f"ComputeProof ledger checkpoints of {cp.origin}"[:2000],
                headline="ComputeProof checkpoints",
                custom=custom,
            )
            sha = hashlib.sha256(data).hexdigest()
            if "proof_hash" in body and body["proof_hash"] != sha:
                raise AnchorError(
                    f"the Capture API registered asset {body['id']} with proof hash "
                    f"{str(body['proof_hash'])[:80]}, not the SHA-256 of the file sent"
                )
            nid = str(body["id"])
            registry.update(nid=nid, action="register", asset_sha256=sha, commits_before=0)
            before = 0
        else:
            try:
                before = len(self.client.history(nid))
            except AnchorError:
                before = -1  # unknown: the transaction cannot be told apart later
            message = f"checkpoint {cp.size} of {cp.origin}"
            body = self.client.update(nid, message[:200], custom)
            registry.update(nid=nid, action="update", commit_message=message[:200])
            if before >= 0:
                registry["commits_before"] = before
        for name in ("cid", "proof_hash"):
            if isinstance(body.get(name), str) and body[name]:
                registry[name] = body[name]
        if before >= 0:
            # the update is made and paid for: a failing history read must not lose its
            # record; `anchor refresh` finds the transaction later
            with contextlib.suppress(AnchorError):
                registry.update(
                    _our_commit(self.client, nid, before, self.commit_wait, self.poll_interval)
                )
        return AnchorRecord.for_checkpoint(self.kind, self.target, cp, registry)


def refresh_commits(ledger: Ledger, client: CaptureClient) -> list[AnchorRecord]:
    """Fill in the commit transaction of Numbers records that lack it, where the commit
    history shows it now; the records updated."""
    updated = []
    for record in anchors_of(ledger):
        reg = dict(record.registry)
        if record.kind not in ("numbers", "numbers-event") or "commit_tx" in reg:
            continue
        before, nid = reg.get("commits_before"), reg.get("nid")
        if not isinstance(before, int) or not isinstance(nid, str):
            continue
        found = _our_commit(client, nid, before, 0.0, 0.0)
        if found:
            reg.update(found)
            new = replace(record, registry=reg)
            ledger.store.update_anchor(record.id, new.row().record)
            updated.append(new)
    return updated


def anchor_job_events(ledger: Ledger, client: CaptureClient, job: str) -> list[AnchorRecord]:
    """The seed's model, for sites that want it: one Numbers asset per job and one commit
    per event (its leaf hash). Costs a registration per job plus an update per event, each
    0.1 NUM + gas. Events already committed are skipped; the new records, stored."""
    row = ledger.resolve_job(job)
    target = f"numbers:{client.api_url}"
    done = [
        r
        for r in anchors_of(ledger, "numbers-event", target)
        if r.registry.get("job_key") == row.job_key
    ]
    committed = {str(r.registry.get("event_id")) for r in done}
    nid = str(done[0].registry["nid"]) if done else None
    out = []
    for leaf in ledger.store.job_leaves(row.job_key):
        if leaf.event_id in committed:
            continue
        size = leaf.index + 1
        root = ledger.root(size)
        cp = AnchoredCheckpoint(ledger.origin, size, root, "")
        custom: dict[str, object] = {
            "format": "computeproof.event/v1",
            "origin": ledger.origin,
            "job_key": row.job_key,
            "event_id": leaf.event_id,
            "type": leaf.type,
            "leaf_index": leaf.index,
            "leaf_hash": merkle.leaf_hash(leaf.envelope).hex(),
        }
        registry: dict[str, object] = {
            "job_key": row.job_key,
            "event_id": leaf.event_id,
            "chain_id": JADE_CHAIN_ID,
        }
        if nid is None:
            data = canonical_str({"format": "computeproof.job-asset/v1", "origin": ledger.origin,
                                  "job_key": row.job_key}).encode() + b"\n"  # fmt: skip
            body = client.register(
                "computeproof-job.json", data, "application/json",
                caption=f"ComputeProof receipt of job {row.job} ({row.job_key})"[:2000],
                headline=f"job {row.job}"[:HEADLINE_MAX], custom=custom,
            )  # fmt: skip
            nid = str(body["id"])
            registry.update(nid=nid, action="register", commits_before=0)
            before = 0
        else:
            before = len(client.history(nid))
            body = client.update(nid, f"{leaf.type} event {leaf.event_id[:16]}", custom)
            registry.update(nid=nid, action="update", commits_before=before)
        registry.update(_our_commit(client, nid, before, 0.0, 0.0))
        record = AnchorRecord.for_checkpoint("numbers-event", target, cp, registry)
        anchor_id = ledger.store.add_anchor(record.row())
        out.append(replace(record, id=anchor_id))
    return out
