"""The client's address behind proxies: only trusted proxies' forwarding headers are believed."""

import pytest
from pydantic import ValidationError
from starlette.datastructures import Headers

from antechamber.cli import SERVER_OPTIONS, main
from runtime.client_address import TrustedProxies, client_address
from runtime.settings import RuntimeSettings

NOBODY = TrustedProxies()
LOOPBACK = TrustedProxies.parse("127.0.0.1")
INGRESS = TrustedProxies.parse("10.0.0.0/8, fd00::/8, 192.0.2.7")


def headers(*lines: tuple[str, str]) -> Headers:
    return Headers(raw=[(name.lower().encode(), value.encode("latin-1")) for name, value in lines])


def xff(value: str) -> Headers:
    return headers(("X-Forwarded-For", value))


def forwarded(value: str) -> Headers:
    return headers(("Forwarded", value))


# -- an untrusted peer: the headers are its own word ------------------------------------------


@pytest.mark.parametrize(
    "sent",
    [
        xff("203.0.113.9"),
        forwarded("for=203.0.113.9"),
        headers(("X-Forwarded-For", "203.0.113.9"), ("Forwarded", "for=198.51.100.1")),
        headers(),
    ],
)
def test_by_default_no_proxy_is_trusted_and_the_peer_is_the_client(sent: Headers) -> None:
    assert client_address("127.0.0.1", sent, NOBODY) == "127.0.0.1"


def test_headers_from_a_peer_outside_the_trusted_proxies_are_ignored() -> None:
    assert client_address("198.51.100.4", xff("203.0.113.9"), INGRESS) == "198.51.100.4"
    assert client_address("11.0.0.1", xff("203.0.113.9"), INGRESS) == "11.0.0.1"
    assert client_address("192.0.2.8", xff("203.0.113.9"), INGRESS) == "192.0.2.8"


def test_without_a_peer_there_is_no_address() -> None:
    assert client_address(None, xff("203.0.113.9"), LOOPBACK) is None


def test_a_peer_that_is_not_an_address_is_kept_as_it_is() -> None:
    assert client_address("testclient", xff("203.0.113.9"), LOOPBACK) == "testclient"


# -- a trusted peer: the chain, read from the right -------------------------------------------


def test_a_trusted_proxy_gives_the_address_it_was_connected_from() -> None:
    assert client_address("127.0.0.1", xff("203.0.113.9"), LOOPBACK) == "203.0.113.9"
    assert client_address("10.2.3.4", xff(" 203.0.113.9 "), INGRESS) == "203.0.113.9"


def test_what_the_client_wrote_left_of_the_proxys_entry_counts_for_nothing() -> None:
    chain = xff("1.1.1.1, 8.8.8.8, 203.0.113.9")
    assert client_address("127.0.0.1", chain, LOOPBACK) == "203.0.113.9"


def test_trusted_hops_are_skipped_up_to_the_first_untrusted_one() -> None:
    chain = xff("1.1.1.1, 203.0.113.9, 192.0.2.7, 10.9.9.9")
    assert client_address("10.0.0.2", chain, INGRESS) == "203.0.113.9"


def test_a_chain_of_trusted_proxies_only_ends_at_its_leftmost_address() -> None:
    assert client_address("10.0.0.2", xff("10.1.1.1, 10.2.2.2"), INGRESS) == "10.1.1.1"


def test_repeated_header_lines_are_one_chain() -> None:
    sent = headers(("X-Forwarded-For", "1.1.1.1, 203.0.113.9"), ("X-Forwarded-For", "10.1.1.1"))
    assert client_address("10.0.0.2", sent, INGRESS) == "203.0.113.9"


def test_ports_are_not_part_of_the_address() -> None:
    assert client_address("127.0.0.1", xff("203.0.113.9:51234"), LOOPBACK) == "203.0.113.9"
    assert client_address("127.0.0.1", xff("[2001:db8::9]:443"), LOOPBACK) == "2001:db8::9"


# -- IPv6 and networks ------------------------------------------------------------------------


def test_ipv6_proxies_and_clients() -> None:
    assert client_address("fd00::1", xff("2001:db8::9, fd12::7"), INGRESS) == "2001:db8::9"
    assert client_address("fe80::1", xff("2001:db8::9"), INGRESS) == "fe80::1"


def test_ipv6_addresses_are_normalised_so_one_client_has_one_spelling() -> None:
    spelled = xff("2001:0DB8:0000:0000:0000:0000:0000:0009")
    assert client_address("127.0.0.1", spelled, LOOPBACK) == "2001:db8::9"
    assert client_address("2001:0db8::0009", headers(), NOBODY) == "2001:db8::9"


def test_an_ipv4_mapped_peer_is_its_ipv4_address() -> None:
    assert client_address("::ffff:127.0.0.1", xff("203.0.113.9"), LOOPBACK) == "203.0.113.9"
    assert client_address("::ffff:198.51.100.4", headers(), NOBODY) == "198.51.100.4"
    assert client_address("127.0.0.1", xff("::ffff:203.0.113.9"), LOOPBACK) == "203.0.113.9"


@pytest.mark.parametrize(
    ("peer", "trusted"),
    [("10.0.0.1", True), ("10.255.255.255", True), ("11.0.0.1", False), ("192.0.2.7", True)],
)
def test_networks_trust_every_address_in_them(peer: str, trusted: bool) -> None:
    found = client_address(peer, xff("203.0.113.9"), INGRESS)
    assert found == ("203.0.113.9" if trusted else peer)


# -- Forwarded (RFC 7239) ---------------------------------------------------------------------


def test_forwarded_is_read_like_x_forwarded_for() -> None:
    sent = forwarded('for=1.1.1.1, for=203.0.113.9;proto=https;by=10.0.0.2, For="10.3.3.3"')
    assert client_address("10.0.0.2", sent, INGRESS) == "203.0.113.9"
    quoted = forwarded('for="[2001:db8:cafe::17]:4711";proto=https')
    assert client_address("127.0.0.1", quoted, LOOPBACK) == "2001:db8:cafe::17"


def test_x_forwarded_for_wins_over_forwarded_which_proxies_pass_through() -> None:
    # ingress-nginx and cloud load balancers append to X-Forwarded-For and pass a client's
    # Forwarded on untouched: reading it would let the client pick its address.
    sent = headers(("Forwarded", "for=1.1.1.1"), ("X-Forwarded-For", "203.0.113.9"))
    assert client_address("127.0.0.1", sent, LOOPBACK) == "203.0.113.9"


# -- garbage ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["", " ", ",", "unknown", "not an address", "203.0.113.9:port", "[2001:db8::9", "1.2.3.4.5"],
)
def test_garbage_from_the_trusted_proxy_leaves_its_own_address(value: str) -> None:
    assert client_address("127.0.0.1", xff(value), LOOPBACK) == "127.0.0.1"


def test_garbage_further_left_ends_the_walk_at_the_hop_to_its_right() -> None:
    assert client_address("10.0.0.2", xff("203.0.113.9, junk, 10.1.1.1"), INGRESS) == "10.1.1.1"
    hidden = forwarded("for=_hidden, for=unknown")
    assert client_address("127.0.0.1", hidden, LOOPBACK) == "127.0.0.1"
    assert client_address("127.0.0.1", forwarded("proto=https"), LOOPBACK) == "127.0.0.1"


def test_garbage_from_an_untrusted_client_is_never_reached() -> None:
    sent = xff("\u00ff\u00fe, ;;, [::1]:x, 203.0.113.9")
    assert client_address("127.0.0.1", sent, LOOPBACK) == "203.0.113.9"


# -- the setting ------------------------------------------------------------------------------


def test_the_setting_is_empty_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTECHAMBER_FORWARDED_ALLOW_IPS", raising=False)
    settings = RuntimeSettings()
    assert settings.forwarded_allow_ips == ""
    assert settings.trusted_proxies == NOBODY


def test_the_setting_takes_addresses_and_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTECHAMBER_FORWARDED_ALLOW_IPS", " 10.0.0.0/8, 127.0.0.1,, fd00::/8 ")
    settings = RuntimeSettings()
    assert settings.forwarded_allow_ips == "10.0.0.0/8,127.0.0.1,fd00::/8"
    assert client_address("10.1.2.3", xff("203.0.113.9"), settings.trusted_proxies) == (
        "203.0.113.9"
    )


@pytest.mark.parametrize("entry", ["*", "localhost", "10.0.0.1/8", "10.0.0.0/33", "300.1.1.1"])
def test_a_bad_entry_stops_the_service_at_start(
    monkeypatch: pytest.MonkeyPatch, entry: str
) -> None:
    monkeypatch.setenv("ANTECHAMBER_FORWARDED_ALLOW_IPS", f"127.0.0.1,{entry}")
    with pytest.raises(ValidationError, match="forwarded_allow_ips") as raised:
        RuntimeSettings()
    assert f"{entry!r} is not an IP address or network" in str(raised.value)


# -- how the services are served --------------------------------------------------------------


def test_uvicorn_leaves_the_client_address_alone() -> None:
    assert SERVER_OPTIONS["proxy_headers"] is False


def test_serve_refuses_uvicorns_variable_which_it_no_longer_reads(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.0/8")
    assert main(["serve", "links"]) == 2
    assert "ANTECHAMBER_FORWARDED_ALLOW_IPS" in capsys.readouterr().err
