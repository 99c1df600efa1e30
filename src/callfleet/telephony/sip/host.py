"""What a SIP user agent says about itself, and what its dialogs need from it.

`DialogHost` is the part of `SipClient` a `Call` and an `OutgoingInvite` use: its
identity (Via, Contact, capabilities), its endpoint, and a place for background
tasks. With it they do not import the client that creates them.

`SipClient` (placing calls) and the simulator's `PhoneSimulator` (answering them)
both build their Via, Contact and OPTIONS headers with the functions here.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, Protocol

from callfleet.telephony.sip.config import SipClientConfig
from callfleet.telephony.sip.dialog import Dialog
from callfleet.telephony.sip.endpoint import SipEndpoint, new_branch
from callfleet.telephony.sip.transport import Address

__all__ = ["DialogHost", "capability_headers", "contact_value", "via_value"]


class DialogHost(Protocol):
    """The user agent that owns a dialog (`SipClient`)."""

    ALLOW: str
    config: SipClientConfig
    endpoint: SipEndpoint

    @property
    def host(self) -> str:
        """The address the peer reaches us at (Via, Contact, SDP, Call-ID)."""
        ...

    def via(self) -> str: ...

    def contact(self) -> str: ...

    def capabilities(self) -> list[tuple[str, str]]: ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run `coro` in the background; the host cancels it when it closes."""
        ...

    def dialog_destination(self, dialog: Dialog, proxy: Address | None) -> Address:
        """Where in-dialog requests go: `proxy` (a trunk) if set, else the remote target."""
        ...


def via_value(transport_name: str, host: str, port: int) -> str:
    """A top Via with a fresh branch, asking for `rport` (RFC 3581)."""
    return f"SIP/2.0/{transport_name} {host}:{port};branch={new_branch()};rport"


def contact_value(user: str, host: str, port: int, transport_name: str) -> str:
    """A Contact URI in angle brackets; `;transport=tcp` when the transport is TCP."""
    suffix = ";transport=tcp" if transport_name.upper() == "TCP" else ""
    return f"<sip:{user}@{host}:{port}{suffix}>"


def capability_headers(allow: str, *, timer: bool) -> list[tuple[str, str]]:
    """The answer to OPTIONS: Allow, Accept (SDP) and, with session timers, Supported."""
    headers = [("Allow", allow), ("Accept", "application/sdp")]
    if timer:
        headers.append(("Supported", "timer"))
    return headers
