"""SIP dialogs (RFC 3261 §12): the state two user agents share for the life of a call.

A dialog is identified by Call-ID + local tag + remote tag (§12). It holds what every in-dialog
request needs (§12.2.1.1): the local and remote URIs with their tags, the remote target (the peer's
Contact), the route set (the Record-Route values of the dialog-creating request, in order for the UAS,
§12.1.1) and both CSeq counters. This module builds the dialog from an INVITE we answer and from then
on builds our requests (BYE, REFER, re-INVITE) and checks the peer's (§12.2.2). No I/O.

Routing of our requests (§12.2.1.1, §16.12.1.1):

    route set empty                       Request-URI = remote target, no Route
    first route has `lr` (loose router)   Request-URI = remote target, Route = the route set
    first route without `lr` (strict)     Request-URI = first route's URI, Route = the rest + remote target

The next hop (where the request is physically sent) is the first Route's URI, or the remote target.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from telephony.sip.errors import SipParseError
from telephony.sip.headers import Headers
from telephony.sip.message import SipRequest, SipResponse
from telephony.sip.uri import NameAddr, SipUri, parse_name_addrs

DialogId = tuple[str, str, str]  # Call-ID, local tag, remote tag

# §8.1.1.5: the initial local CSeq is arbitrary but below 2**31; starting low leaves room for growth.
INITIAL_LOCAL_CSEQ = 1


class DialogError(SipParseError):
    """A dialog-creating request we cannot build a dialog from (no usable Contact): answer 400."""


@dataclass
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: NameAddr  # our identity in From of our requests (without the tag)
    remote_uri: NameAddr  # the peer's identity in To of our requests (without the tag)
    remote_target: SipUri  # the peer's Contact; re-INVITE and UPDATE may change it (§12.2.2)
    local_contact: str
    route_set: list[NameAddr] = field(default_factory=list)
    local_cseq: int = INITIAL_LOCAL_CSEQ
    remote_cseq: int | None = None

    @property
    def id(self) -> DialogId:
        return (self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def as_uas(cls, request: SipRequest, local_tag: str, local_contact: str) -> Dialog:
        """The dialog a 2xx to `request` (INVITE) creates on our side (§12.1.1)."""
        contacts = request.contacts
        target = contacts[0].uri if contacts else None
        if not isinstance(target, SipUri) or target.scheme.lower() == "tel":
            raise DialogError("INVITE without a SIP Contact")
        route_set = [na for line in request.headers.lines("Record-Route") for na in parse_name_addrs(line)]
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=request.from_tag or "",
            local_uri=_without_tag(request.to),
            remote_uri=_without_tag(request.from_),
            remote_target=target,
            local_contact=local_contact,
            route_set=route_set,
            remote_cseq=request.cseq[0],
        )

    def accepts(self, request: SipRequest) -> bool:
        """§12.2.2: a request whose CSeq is lower than the last one is out of order (answer 500); ACK and
        CANCEL reuse the INVITE's number and are not checked. Updates the remote CSeq when accepted."""
        if request.method in ("ACK", "CANCEL"):
            return True
        number = request.cseq[0]
        if self.remote_cseq is not None and number < self.remote_cseq:
            return False
        self.remote_cseq = number
        return True

    def update_target(self, request: SipRequest | SipResponse) -> None:
        """A target refresh (re-INVITE, UPDATE) may carry a new Contact (§12.2.2)."""
        contacts = request.contacts
        if contacts and isinstance(contacts[0].uri, SipUri) and contacts[0].uri.scheme.lower() != "tel":
            self.remote_target = contacts[0].uri

    def next_hop(self) -> SipUri:
        """Where our in-dialog requests are sent: the first route, else the remote target."""
        if self.route_set and isinstance(self.route_set[0].uri, SipUri):
            return self.route_set[0].uri
        return self.remote_target

    def request(
        self,
        method: str,
        via: str,
        *,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        cseq: int | None = None,
    ) -> SipRequest:
        """A new in-dialog request (§12.2.1.1); takes the next local CSeq unless `cseq` is given (ACK)."""
        if cseq is None:
            self.local_cseq += 1
            cseq = self.local_cseq
        uri: SipUri = self.remote_target
        routes = list(self.route_set)
        first = routes[0].uri if routes else None
        if isinstance(first, SipUri) and not any(name.lower() == "lr" for name, _ in first.params):
            # Strict router (RFC 2543): it is the Request-URI, the remote target goes last in Route.
            uri = first
            routes = [*routes[1:], NameAddr(self.remote_target)]
        out = Headers()
        out.add("Via", via)
        for route in routes:
            out.add("Route", str(route))
        out.add("Max-Forwards", "70")
        out.add("From", str(self.local_uri.with_param("tag", self.local_tag)))
        out.add("To", str(self.remote_uri.with_param("tag", self.remote_tag)))
        out.add("Call-ID", self.call_id)
        out.add("CSeq", f"{cseq} {method}")
        out.add("Contact", self.local_contact)
        for name, value in headers or ():
            out.add(name, value)
        return SipRequest(method, uri, out, body)


def _without_tag(address: NameAddr) -> NameAddr:
    return NameAddr(
        address.uri,
        address.display,
        tuple((k, v) for k, v in address.params if k.lower() != "tag"),
        address.quoted,
        address.bracketed,
    )
