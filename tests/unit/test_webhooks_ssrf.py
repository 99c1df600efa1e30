"""The SSRF guard: URL syntax, address classification, and resolution of literal IPs.

Only numeric hosts and `localhost` (from /etc/hosts) are resolved for real; anything that
would need DNS goes through a stub resolver, so these tests send no packets.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import pytest

from callfleet.net import ssrf
from callfleet.net.ssrf import (
    InvalidWebhookUrl,
    UnresolvableTarget,
    UnsafeTarget,
    check_url_syntax,
    resolve_and_check,
    unsafe_reason,
)

AddrInfo = tuple[int, int, int, str, tuple[Any, ...]]


def run_with_resolver(
    answers: Callable[[str], Sequence[str]] | None,
    make: Callable[[], Coroutine[Any, Any, list[str]]],
) -> list[str]:
    """Run `make()` with the loop's getaddrinfo replaced by `answers` (host -> addresses)."""

    async def main() -> list[str]:
        if answers is not None:
            loop = asyncio.get_running_loop()

            async def fake(host: str, port: int, **_: Any) -> list[AddrInfo]:
                result: list[AddrInfo] = []
                for a in answers(host):
                    family = socket.AF_INET6 if ":" in a else socket.AF_INET
                    sockaddr = (a, port, 0, 0) if family == socket.AF_INET6 else (a, port)
                    result.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
                return result

            loop.getaddrinfo = fake  # type: ignore[method-assign, assignment]
        return await make()

    return asyncio.run(main())


def check(url: str, *, allow_private: bool = False) -> list[str]:
    return run_with_resolver(None, lambda: resolve_and_check(url, allow_private=allow_private))


# --- check_url_syntax -------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/hooks/calls",
        "http://example.com:8080/x?y=1#frag",
        "HTTPS://EXAMPLE.COM",
        "https://bücher.example/hook",
        "http://[2606:4700::1111]/",
        "http://127.0.0.1:9/",  # syntax is fine; resolve_and_check refuses it
    ],
)
def test_valid_urls(url: str) -> None:
    check_url_syntax(url)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.com/", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("javascript:alert(1)", "http:// or https://"),
        ("example.com/hook", "http:// or https://"),
        ("http://", "no host"),
        ("http:///path", "no host"),
        ("https://:443/", "no host"),
        ("https://user:pw@example.com/", "user name or password"),
        ("https://user@example.com/", "user name or password"),
        ("https://@example.com/", "user name or password"),
        ("https://example.com/" + "a" * 2030, "longer than 2048"),
        ("https://exa mple.com/", "whitespace"),
        ("https://example.com/\r\nX-Injected: 1", "whitespace"),
        ("https://example.com/\x00", "control"),
        ("https://example.com:0/", "port 0"),
        ("https://example.com:99999/", "malformed"),
        ("https://example.com:http/", "malformed"),
        ("http://[::1/", "malformed"),
    ],
)
def test_invalid_urls(url: str, why: str) -> None:
    with pytest.raises(InvalidWebhookUrl, match=why):
        check_url_syntax(url)


def test_length_limit_is_inclusive() -> None:
    base = "https://example.com/"
    check_url_syntax(base + "a" * (2048 - len(base)))


def test_invalid_url_is_a_value_error_and_not_retryable() -> None:
    assert issubclass(InvalidWebhookUrl, ValueError)
    assert not InvalidWebhookUrl.retryable


# --- unsafe_reason ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "fragment"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("100.64.1.1", "carrier-grade NAT"),
        ("100.127.255.254", "carrier-grade NAT"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.10", "private"),  # TEST-NET-1 is on Python's non-global list
        ("::ffff:127.0.0.1", "IPv6 form of 127.0.0.1, which is a loopback address"),
        ("::ffff:10.1.2.3", "IPv6 form of 10.1.2.3"),
        ("::ffff:169.254.169.254", "metadata"),
        ("2002:7f00:1::", "IPv6 form of 127.0.0.1"),  # 6to4
        ("2002:a9fe:a9fe::1", "metadata"),  # 6to4 around 169.254.169.254
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "IPv6 form of 127.0.0.1"),  # Teredo
        ("64:ff9b::a00:1", "IPv6 form of 10.0.0.1"),  # NAT64
        ("64:ff9b::808:808", "reserved"),  # NAT64 of a public address is still refused
        ("::7f00:1", "reserved"),  # deprecated IPv4-compatible form
        ("fe80::1%eth0", "link-local"),
    ],
)
def test_unsafe_addresses(address: str, fragment: str) -> None:
    reason = unsafe_reason(ipaddress.ip_address(address))
    assert reason is not None
    assert fragment in reason


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "2a00:1450:4001::200e", "100.128.0.1"]
)
def test_public_addresses_are_safe(address: str) -> None:
    assert unsafe_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "10.0.0.1", "100.64.1.1", "fe80::1"])
def test_allow_private_lifts_the_network_rules(address: str) -> None:
    assert unsafe_reason(ipaddress.ip_address(address), allow_private=True) is None


@pytest.mark.parametrize(
    "address", ["169.254.169.254", "fd00:ec2::254", "100.100.100.200", "::ffff:169.254.169.254"]
)
def test_metadata_is_refused_even_when_private_is_allowed(address: str) -> None:
    reason = unsafe_reason(ipaddress.ip_address(address), allow_private=True)
    assert reason is not None
    assert "metadata" in reason


# --- resolve_and_check with literal IPs and localhost -----------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://[::1]:8080/",
        "https://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:127.0.0.1]/",
        "http://100.64.1.1/",
        "http://0.0.0.0:8000/",
        "http://localhost:8000/",
        "http://LOCALHOST/",
        "http://127.1/",  # the resolver expands legacy numeric forms…
        "http://2130706433/",
        "http://0x7f000001/",
        "http://017700000001/",
    ],
)
def test_resolve_refuses_internal_targets(url: str) -> None:
    with pytest.raises(UnsafeTarget) as caught:
        check(url)
    message = str(caught.value)
    assert "CALLFLEET_WEBHOOK_ALLOW_PRIVATE=true" in message or "metadata" in message
    assert "refused" in message
    assert not caught.value.retryable
    assert isinstance(caught.value, ValueError)


def test_unsafe_target_message_explains() -> None:
    with pytest.raises(UnsafeTarget) as caught:
        check("http://localhost:9/")
    err = caught.value
    assert err.host == "localhost"
    assert err.address == "127.0.0.1"
    assert err.reason == "a loopback address"
    assert str(err).startswith("webhook target 'localhost' resolves to 127.0.0.1, a loopback")
    assert "set CALLFLEET_WEBHOOK_ALLOW_PRIVATE=true" in str(err)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:9/", ["127.0.0.1"]),
        ("http://[::1]/", ["::1"]),
        ("http://10.0.0.1/", ["10.0.0.1"]),
        ("http://100.64.1.1/", ["100.64.1.1"]),
        ("http://localhost:9/", ["127.0.0.1"]),
    ],
)
def test_allow_private_returns_addresses(url: str, expected: list[str]) -> None:
    assert check(url, allow_private=True) == expected


def test_metadata_url_refused_even_when_private_allowed() -> None:
    with pytest.raises(UnsafeTarget, match="metadata addresses are always refused"):
        check("http://169.254.169.254/latest/", allow_private=True)


def test_public_literal_is_accepted_without_dns() -> None:
    assert check("https://8.8.8.8/hook") == ["8.8.8.8"]
    assert check("https://[2606:4700::1111]:8443/") == ["2606:4700::1111"]


def test_malformed_url_is_rejected_before_resolution() -> None:
    with pytest.raises(InvalidWebhookUrl):
        check("ftp://127.0.0.1/")


# --- resolve_and_check with a stub resolver ---------------------------------------------


def test_any_unsafe_address_among_several_refuses() -> None:
    def answers(host: str) -> list[str]:
        assert host == "mixed.example"
        return ["8.8.8.8", "2606:4700::1111", "10.0.0.7"]

    with pytest.raises(UnsafeTarget, match=r"10\.0\.0\.7"):
        run_with_resolver(
            answers, lambda: resolve_and_check("https://mixed.example/", allow_private=False)
        )


def test_all_safe_addresses_are_returned_once_each() -> None:
    def answers(host: str) -> list[str]:
        return ["2606:4700::1111", "8.8.8.8", "8.8.8.8"]

    got = run_with_resolver(
        answers, lambda: resolve_and_check("https://ok.example/", allow_private=False)
    )
    assert got == ["2606:4700::1111", "8.8.8.8"]


def test_idn_host_is_resolved_in_ascii_form() -> None:
    seen: list[str] = []

    def answers(host: str) -> list[str]:
        seen.append(host)
        return ["8.8.8.8"]

    run_with_resolver(
        answers, lambda: resolve_and_check("https://bücher.example/", allow_private=False)
    )
    assert seen == ["xn--bcher-kva.example"]


def test_every_check_resolves_afresh() -> None:
    """A rebinding name that turns private between checks is refused the second time."""
    answers_in_turn = iter([["93.184.216.34"], ["127.0.0.1"]])

    async def twice() -> list[str]:
        first = await resolve_and_check("https://rebind.example/", allow_private=False)
        with pytest.raises(UnsafeTarget, match="loopback"):
            await resolve_and_check("https://rebind.example/", allow_private=False)
        return first

    assert run_with_resolver(lambda _host: next(answers_in_turn), twice) == ["93.184.216.34"]


def test_unresolvable_host_is_a_retryable_error() -> None:
    def answers(host: str) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(UnresolvableTarget, match="does not resolve") as caught:
        run_with_resolver(
            answers, lambda: resolve_and_check("https://nowhere.invalid/", allow_private=False)
        )
    assert caught.value.retryable
    assert not isinstance(caught.value, UnsafeTarget)


def test_empty_answer_is_unresolvable() -> None:
    with pytest.raises(UnresolvableTarget, match="no addresses"):
        run_with_resolver(
            lambda _host: [], lambda: resolve_and_check("https://x.example/", allow_private=True)
        )


def test_slow_resolver_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ssrf, "DNS_TIMEOUT_S", 0.05)

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()

        async def slow(*_: Any, **__: Any) -> list[AddrInfo]:
            await asyncio.sleep(10)
            return []

        loop.getaddrinfo = slow  # type: ignore[method-assign, assignment]
        return await resolve_and_check("https://slow.example/", allow_private=False)

    with pytest.raises(UnresolvableTarget, match="did not resolve within"):
        asyncio.run(main())


@pytest.mark.parametrize(
    ("address", "fragment"),
    [
        ("192.0.0.192", "metadata"),  # Oracle Cloud
        ("168.63.129.16", "metadata"),  # Azure's wire server
        ("fe80::a9fe:a9fe", "metadata"),  # 169.254.169.254 as an IPv6 link-local
        ("169.254.0.1", "link-local"),
        ("169.254.10.20", "link-local"),
        ("169.254.255.254", "link-local"),
        ("::ffff:169.254.7.7", "link-local"),
    ],
)
def test_metadata_ranges_stay_refused_when_private_is_allowed(address: str, fragment: str) -> None:
    reason = unsafe_reason(ipaddress.ip_address(address), allow_private=True)
    assert reason is not None
    assert fragment in reason
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(UnsafeTarget, match="always refused"):
        check(f"http://{host}/hook", allow_private=True)
