"""The dialog state of one call (RFC 3261 §12) and the requests sent inside it.

A UAC dialog is born from a 2xx (or a tagged 1xx): its remote target is the
response's Contact, its route set the response's Record-Route reversed, and its
remote tag the To tag. Requests inside it carry our From tag, the remote tag, the
route set, and a CSeq that only grows (ACK reuses the INVITE's number). Only loose
routing (`;lr`) is supported, as every current proxy does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from callfleet.telephony.sip.message import Headers, SipRequest, SipResponse
from callfleet.telephony.sip.transport import Address
from callfleet.telephony.sip.uri import parse_name_addr, parse_uri

__all__ = ["Dialog"]


@dataclass
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_addr: str
    """Our From value without the tag."""
    remote_addr: str
    """The To value without the tag."""
    remote_target: str
    route_set: list[str] = field(default_factory=list)
    local_cseq: int = 1
    remote_cseq: int | None = None

    @classmethod
    def from_response(cls, invite: SipRequest, response: SipResponse) -> Dialog:
        from_value = invite.headers.get("From") or ""
        to = response.to_addr
        contacts = response.headers.values("Contact")
        target = str(parse_name_addr(contacts[0]).uri) if contacts else invite.uri
        routes = list(reversed(response.headers.values("Record-Route")))
        return cls(
            call_id=invite.call_id,
            local_tag=invite.from_addr.tag or "",
            remote_tag=to.tag or "",
            local_addr=_strip_tag(from_value),
            remote_addr=_strip_tag(response.headers.get("To") or ""),
            remote_target=target,
            route_set=routes,
            local_cseq=invite.cseq[0],
        )

    def matches(self, request: SipRequest) -> bool:
        return (
            request.call_id == self.call_id
            and request.to_addr.tag == self.local_tag
            and request.from_addr.tag == self.remote_tag
        )

    def accept_remote_cseq(self, number: int) -> bool:
        """False for a request older than the last one seen (answer it 500)."""
        if self.remote_cseq is not None and number <= self.remote_cseq:
            return False
        self.remote_cseq = number
        return True

    def refresh_target(self, message: SipRequest | SipResponse) -> None:
        contacts = message.headers.values("Contact")
        if contacts:
            self.remote_target = str(parse_name_addr(contacts[0]).uri)

    def destination(self) -> Address:
        """Where to send the next request: the first route, else the remote target."""
        if self.route_set:
            uri = parse_name_addr(self.route_set[0]).uri
        else:
            uri = parse_uri(self.remote_target)
        return uri.hostport()

    def create_request(
        self,
        method: str,
        via: str,
        *,
        contact: str | None = None,
        cseq: int | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        extra: list[tuple[str, str]] | None = None,
    ) -> SipRequest:
        """A request in this dialog; a new CSeq unless `cseq` is given (ACK)."""
        if cseq is None:
            self.local_cseq += 1
            cseq = self.local_cseq
        h = Headers()
        h.add("Via", via)
        h.add("Max-Forwards", "70")
        for route in self.route_set:
            h.add("Route", route)
        h.add("From", f"{self.local_addr};tag={self.local_tag}")
        h.add("To", f"{self.remote_addr};tag={self.remote_tag}")
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{cseq} {method}")
        if contact is not None:
            h.add("Contact", contact)
        for name, value in extra or []:
            h.add(name, value)
        if content_type is not None:
            h.add("Content-Type", content_type)
        return SipRequest(headers=h, body=body, method=method, uri=self.remote_target)


def _strip_tag(value: str) -> str:
    addr = parse_name_addr(value)
    addr.params.pop("tag", None)
    return str(addr)
