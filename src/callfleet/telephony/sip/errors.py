"""The exceptions of the SIP layer, in one place.

```
SipError
├── SipParseError        a message, header, URI or SDP body we cannot read;
│                        the transport logs it and drops the datagram
├── SdpError             an SDP body we cannot use (no common codec, no audio)
├── TransactionTimeout   Timer B/F fired: the peer never gave a final response
└── TransportError       a socket could not be opened or a TCP peer went away
```

Call outcomes (busy, declined, ...) are never exceptions: `SipClient.invite`
returns them as values.
"""

from __future__ import annotations

__all__ = ["SdpError", "SipError", "SipParseError", "TransactionTimeout", "TransportError"]


class SipError(Exception):
    """Base of every error raised by `callfleet.telephony.sip`."""


class SipParseError(SipError):
    """The bytes are not a well-formed SIP message (or a part of one)."""


class SdpError(SipError):
    """The SDP body cannot be parsed or negotiated."""


class TransactionTimeout(SipError):
    """No final response arrived before the transaction's give-up timer."""


class TransportError(SipError):
    """Sending failed, or a connection was lost."""
