"""Rotating the trust anchor: a chain of links, each endorsed by the key it replaces and
cross-signed by the key it introduces (as TUF rotates its root, and SPIRE its upstream
authority). An agent pinned to any key of the chain reaches the current one, checking every
signature on the way; nothing else moves its pin.

A link's payload names both keys by thumbprint, its time, and whether the key it replaces is
cut out (``revoke_previous``: no chain is kept through it, so agents still pinned to it must
be given the new anchor). Both signatures cover the same canonical bytes, which the reader
rebuilds from the link's fields: nothing in a link is believed unsigned.
"""

from __future__ import annotations

from collections.abc import Sequence

from .encoding import b64url_decode, dumps, loads_object
from .envelope import MAX_SNAPSHOT_LENGTH, PROTOCOL_VERSION, ControlKey, TrustAnchor, control_verifying_key
from .errors import BadSignature, BrokenAnchorChain, MalformedMessage, UntrustedSigner
from .events import AnchorLink, Event, EventType, Snapshot
from .jwk import VerifyingKey
from .jws import compact_header, sign_compact, split_compact

__all__ = [
    "LINK_TYP",
    "MAX_CHAIN",
    "after_event",
    "follow",
    "make_link",
    "open_event_by_any",
    "open_link",
    "open_snapshot",
]

LINK_TYP = "keyherald-anchor-link+jws"
MAX_CHAIN = 16
"""Links kept with the state: an agent pinned more rotations ago than this must be re-pinned."""


def _payload(previous: str, new: str, at: float, revoke_previous: bool) -> bytes:
    return dumps(
        {"typ": "anchor-link", "previous": previous, "next": new, "at": at, "revoke_previous": revoke_previous}
    )


def make_link(old: ControlKey, new: ControlKey, *, at: float, revoke_previous: bool = False) -> AnchorLink:
    """The link from ``old`` to ``new``: what ``anchor.rotated`` carries."""
    before, after = old.signing_key.public, new.signing_key.public
    payload = _payload(before.kid, after.kid, at, revoke_previous)
    header = {"typ": LINK_TYP, "khv": PROTOCOL_VERSION}
    return AnchorLink(
        previous=before.kid,
        previous_jwk=before.jwk,
        jwk=after.jwk,
        at=at,
        revoke_previous=revoke_previous,
        endorsement=sign_compact(header, payload, old.signing_key),
        cross=sign_compact(header, payload, new.signing_key),
    )


def _check(jws: str, key: VerifyingKey, payload: bytes, what: str) -> None:
    try:
        head, body, sig = split_compact(jws)
        header = loads_object(b64url_decode(head))
        signature, signed = b64url_decode(sig), b64url_decode(body)
    except ValueError:
        raise MalformedMessage(f"the anchor link's {what} is not a compact JWS") from None
    if (
        header.get("typ") != LINK_TYP
        or header.get("alg") != key.alg
        or header.get("kid") != key.kid
        or "crit" in header
    ):
        raise BrokenAnchorChain(f"the anchor link's {what} is not signed by the key it names")
    if signed != payload or not key.check(b".".join((head, body)), signature):
        raise BadSignature(f"the anchor link's {what} does not verify")


def open_link(link: AnchorLink, previous: VerifyingKey) -> VerifyingKey:
    """The key ``link`` introduces, once the key it replaces (``previous``) endorsed it and it
    signed the same words (proof that whoever rotated holds it)."""
    if previous.kid != link.previous:
        raise BrokenAnchorChain("the anchor link does not start at the current anchor")
    try:
        new = control_verifying_key(link.jwk)
    except ValueError as exc:
        raise MalformedMessage(f"the anchor link's new key is not a control key: {exc}") from None
    payload = _payload(previous.kid, new.kid, link.at, link.revoke_previous)
    _check(link.endorsement, previous, payload, "endorsement")
    _check(link.cross, new, payload, "cross-signature")
    return new


def follow(pinned: TrustAnchor, chain: Sequence[AnchorLink], target: str) -> TrustAnchor:
    """From ``pinned`` along ``chain`` (oldest link first) to the key whose thumbprint is
    ``target`` (a checkpoint's signer). BrokenAnchorChain when the chain does not lead there."""
    if target == pinned.thumbprint:
        return pinned
    start = next((i for i, link in enumerate(chain) if link.previous == pinned.thumbprint), None)
    if start is None:
        raise BrokenAnchorChain(
            "signed by a control key other than the pinned one, and no anchor rotation chain leads there from"
            " the pin (rotated more than {MAX_CHAIN} times since, or with --revoke-previous): pin the current"
            " anchor in KEYHERALD_TRUST_ANCHOR (`keyherald anchor` prints it)".replace("{MAX_CHAIN}", str(MAX_CHAIN))
        )
    key = pinned.key
    if key is None:  # pinned by thumbprint: the first link carries the key it replaces
        try:
            key = control_verifying_key(chain[start].previous_jwk)
        except ValueError:
            raise MalformedMessage("the anchor link carries no usable previous key") from None
        if key.kid != pinned.thumbprint:
            raise BrokenAnchorChain("the anchor link's previous key is not the pinned one")
    for link in chain[start:]:
        key = open_link(link, key)
        if key.kid == target:
            return TrustAnchor(key.kid, key)
    raise BrokenAnchorChain("the anchor rotation chain does not reach the checkpoint's signer")


def open_snapshot(anchor: TrustAnchor, text: str, *, issuer: str | None = None) -> tuple[Snapshot, TrustAnchor]:
    """Open a checkpoint signed by ``anchor`` or by a key its rotation chain leads to (the chain
    is read from the checkpoint, then every link verified, then the checkpoint's signature);
    returns the checkpoint and the anchor that signed it."""
    try:
        header = loads_object(b64url_decode(compact_header(text, max_length=MAX_SNAPSHOT_LENGTH)))
    except ValueError:
        raise MalformedMessage("not a compact JWS") from None
    signer = header.get("kid")
    if signer == anchor.thumbprint or not isinstance(signer, str):
        return anchor.open_snapshot(text, issuer=issuer), anchor
    try:
        _, body, _ = split_compact(text, max_length=MAX_SNAPSHOT_LENGTH)
        payload = loads_object(b64url_decode(body))
        raw = payload.get("anchors", [])
        chain = [AnchorLink.model_validate(link) for link in raw[-MAX_CHAIN:]] if isinstance(raw, list) else []
    except (ValueError, TypeError):
        raise MalformedMessage("the checkpoint's anchor chain is malformed") from None
    if not chain and not payload.get("anchor"):  # never rotated: simply another key than the pin
        return anchor.open_snapshot(text, issuer=issuer), anchor
    successor = follow(anchor, chain, signer)
    return successor.open_snapshot(text, issuer=issuer), successor


def after_event(anchor: TrustAnchor, event: Event) -> TrustAnchor:
    """The anchor that opens the events after ``event`` (once it was applied): the new key of
    an ``anchor.rotated``, else ``anchor``."""
    if event.type != EventType.ANCHOR_ROTATED:
        return anchor
    return TrustAnchor.from_jwk(event.data.get("jwk"))


def open_event_by_any(
    current: TrustAnchor, chain: Sequence[AnchorLink], text: str, *, issuer: str | None = None
) -> Event:
    """Open an event signed by the current anchor or by one an anchor rotation replaced (for
    tools that show the log's history, never for following it: a follower opens each event
    with the one anchor that holds at its place in the chain)."""
    try:
        return current.open_event(text, issuer=issuer)
    except BrokenAnchorChain:
        raise
    except UntrustedSigner:
        for link in reversed(chain):
            try:
                return TrustAnchor.from_jwk(link.previous_jwk).open_event(text, issuer=issuer)
            except (UntrustedSigner, ValueError):
                continue
        raise
