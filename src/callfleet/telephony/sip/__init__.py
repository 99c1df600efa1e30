"""Our asyncio SIP user-agent client (RFC 3261 and friends) for outbound calls."""

from callfleet.telephony.sip.auth import Credentials
from callfleet.telephony.sip.call import Call, EndReason
from callfleet.telephony.sip.client import SipClient
from callfleet.telephony.sip.config import SipClientConfig, SipLimits
from callfleet.telephony.sip.errors import (
    SdpError,
    SipError,
    SipParseError,
    TransactionTimeout,
    TransportError,
)
from callfleet.telephony.sip.invite import InviteResult
from callfleet.telephony.sip.media import MediaHandler
from callfleet.telephony.sip.message import SipRequest, SipResponse, parse_message
from callfleet.telephony.sip.sdp import NegotiatedMedia
from callfleet.telephony.sip.transaction import SipTimers

__all__ = [
    "Call",
    "Credentials",
    "EndReason",
    "InviteResult",
    "MediaHandler",
    "NegotiatedMedia",
    "SdpError",
    "SipClient",
    "SipClientConfig",
    "SipError",
    "SipLimits",
    "SipParseError",
    "SipRequest",
    "SipResponse",
    "SipTimers",
    "TransactionTimeout",
    "TransportError",
    "parse_message",
]
