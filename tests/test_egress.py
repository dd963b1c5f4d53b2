"""The egress policy: address classification, allowlist parsing and matching, URL checks."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowrunner.net.egress import Allowlist, EgressPolicy, classify, host_address
from flowrunner.source.model import HttpPolicy

CLASSIFIED = [
    # IPv4
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("169.254.0.1", "link-local"),
    ("169.254.169.254", "metadata"),
    ("100.100.100.200", "metadata"),
    ("100.64.0.1", "cgnat"),
    ("100.127.255.255", "cgnat"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("198.18.0.1", "reserved"),
    ("198.19.255.255", "reserved"),
    ("192.0.2.1", "reserved"),
    ("198.51.100.7", "reserved"),
    ("203.0.113.9", "reserved"),
    ("192.0.0.8", "reserved"),
    # IPv6
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fe80::1", "link-local"),
    ("febf::1", "link-local"),
    ("fd00:ec2::254", "metadata"),
    ("fc00::1", "unique-local"),
    ("fd12:3456::1", "unique-local"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
    ("2001:db8::1", "reserved"),
    ("100::1", "reserved"),
    ("2001:2::1", "reserved"),
    # IPv6 forms carrying an IPv4 address: judged by that address
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:10.1.2.3", "private"),
    ("::ffff:169.254.169.254", "metadata"),
    ("::127.0.0.1", "loopback"),
    ("::ffff:0:192.168.0.1", "private"),
    ("64:ff9b::127.0.0.1", "loopback"),
    ("64:ff9b::a00:1", "private"),
    ("64:ff9b:1::10.0.0.1", "private"),
    ("64:ff9b:1::8.8.8.8", "reserved"),
    ("2002:7f00:1::1", "loopback"),
    ("2002:a9fe:a9fe::1", "metadata"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),  # Teredo client 127.0.0.1
    # public
    ("8.8.8.8", None),
    ("1.1.1.1", None),
    ("93.184.215.14", None),
    ("172.32.0.1", None),
    ("100.128.0.1", None),
    ("192.0.3.1", None),
    ("2606:4700::1111", None),
    ("2001:4860:4860::8888", None),
    ("::ffff:8.8.8.8", None),
    ("64:ff9b::808:808", None),
    ("2002:808:808::1", None),
]


@pytest.mark.parametrize(("text", "reason"), CLASSIFIED)
def test_classify(text, reason):
    assert classify(ip_address(text)) == reason


def test_the_table_is_large_enough():
    assert len(CLASSIFIED) >= 40
    assert {r for _, r in CLASSIFIED} >= {
        "loopback",
        "private",
        "link-local",
        "cgnat",
        "multicast",
        "unspecified",
        "metadata",
        "unique-local",
        "site-local",
        "reserved",
        None,
    }


PRIVATE = [ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]
LOOPBACK = ip_network("127.0.0.0/8")


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_any_ipv4_agrees_with_the_table(value):
    ip = IPv4Address(value)
    reason = classify(ip)
    assert (reason == "private") == any(ip in n for n in PRIVATE)
    assert (reason == "loopback") == (ip in LOOPBACK)
    # the IPv6 forms that carry it are judged the same
    assert classify(IPv6Address((0xFFFF << 32) | value)) == reason
    assert classify(IPv6Address(int(IPv6Address("64:ff9b::")) | value)) == reason
    assert classify(IPv6Address((0x2002 << 112) | (value << 80))) == reason


# allowlist


def test_allowlist_parses_names_wildcards_ips_and_cidrs():
    allow = Allowlist.parse(
        ["CRM.Example.com.", "*.hooks.example.net", "203.0.113.7", "10.0.0.0/8", "fd00::/8"]
    )
    assert allow.matches_name("crm.example.com")
    assert allow.matches_name("crm.EXAMPLE.com.")
    assert not allow.matches_name("api.crm.example.com")
    assert not allow.matches_name("example.com")
    assert allow.matches_name("a.hooks.example.net")
    assert allow.matches_name("a.b.hooks.example.net")
    assert not allow.matches_name("hooks.example.net")
    assert not allow.matches_name("evilhooks.example.net")
    assert allow.covers(ip_address("203.0.113.7"))
    assert not allow.covers(ip_address("203.0.113.8"))
    assert allow.covers(ip_address("10.20.30.40"))
    assert allow.covers(ip_address("::ffff:10.1.1.1"))
    assert allow.covers(ip_address("fd12::1"))
    assert not allow.covers(ip_address("::a00:1:0:0"))  # not an IPv4 form
    assert not allow.covers(ip_address("0.0.0.1"))  # no cross-version match with fd00::/8
    assert allow.covers(ip_address("64:ff9b::cb00:7107"))  # NAT64 to 203.0.113.7
    assert not allow.covers(ip_address("2002:cb00:7107::1"))  # 6to4 only passes through it


def test_allowlist_accepts_unicode_names():
    assert Allowlist.parse(["bücher.example"]).matches_name("xn--bcher-kva.example")


def test_empty_allowlist_is_false():
    assert not Allowlist.parse([])
    assert Allowlist.parse(["a.example"])


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("", "allowlist entry '' is empty or not a string"),
        (
            "10.0.0.1/8",
            "allowlist entry '10.0.0.1/8' is not a valid CIDR: 10.0.0.1/8 has host bits set",
        ),
        ("https://crm.example.com/x", "not a valid CIDR"),
        ("crm.example.com:443", "(ports and IPv6 brackets are not allowed)"),
        ("127.1", "it looks numeric but is not a valid IP address"),
        ("a..b", "allowlist entry 'a..b' is not a host name, IP address or CIDR"),
        ("*.*.example.com", "is not a host name"),
        ("exa mple.com", "is not a host name"),
        ("-bad.example.com", "is not a host name"),
        ("300.1.1.1", "looks numeric"),
    ],
)
def test_bad_allowlist_entries(entry, message):
    with pytest.raises(ValueError) as info:
        Allowlist.parse([entry])
    assert message in str(info.value)


# the rule


def policy(*allowlist: str, allow_http: bool = False) -> EgressPolicy:
    return EgressPolicy(HttpPolicy(allow_http=allow_http, allowlist=allowlist))


def test_without_allowlist_only_public_addresses():
    egress = policy()
    assert egress.check_addresses("a.example", ["8.8.8.8"]) == (["8.8.8.8"], None)
    assert egress.check_addresses("a.example", ["10.0.0.1"]) == (
        [],
        "10.0.0.1 is a private address (not on the allowlist)",
    )


def test_several_addresses_keep_the_allowed_ones():
    egress = policy()
    assert egress.check_addresses("a.example", ["127.0.0.1", "1.1.1.1", "::1"]) == (
        ["1.1.1.1"],
        None,
    )
    assert egress.check_addresses("a.example", ["::1", "127.0.0.1"]) == (
        [],
        "::1 is a loopback address (not on the allowlist)",
    )


def test_allowlisted_name_resolving_to_loopback_is_refused():
    # DNS rebinding: the name is allowed, its private address is not
    egress = policy("crm.example.com")
    assert egress.check_addresses("crm.example.com", ["127.0.0.1"]) == (
        [],
        "crm.example.com is on the allowlist, but resolves to 127.0.0.1, a loopback "
        "address; allowlist 127.0.0.1 itself to allow it",
    )
    assert egress.check_addresses("crm.example.com", ["8.8.8.8"]) == (["8.8.8.8"], None)
    assert egress.check_addresses("CRM.example.com.", ["8.8.8.8"]) == (["8.8.8.8"], None)


def test_non_public_address_allowed_only_when_covered():
    egress = policy("crm.example.com", "127.0.0.1", "10.1.0.0/16")
    assert egress.check_addresses("crm.example.com", ["127.0.0.1"]) == (["127.0.0.1"], None)
    assert egress.check_addresses("other.example", ["10.1.2.3"]) == (["10.1.2.3"], None)
    assert egress.check_addresses("other.example", ["10.2.0.1"])[1] == (
        "10.2.0.1 is a private address (not on the allowlist)"
    )


def test_with_allowlist_public_addresses_need_a_match():
    egress = policy("crm.example.com", "203.0.113.0/24")
    assert egress.check_addresses("evil.example", ["8.8.8.8"]) == (
        [],
        "evil.example (8.8.8.8) is not on the allowlist",
    )
    assert egress.check_addresses("8.8.8.8", ["8.8.8.8"])[1] == "8.8.8.8 is not on the allowlist"
    # a documentation range is reserved, yet allowed once it is listed
    assert egress.check_addresses("x.example", ["203.0.113.5"]) == (["203.0.113.5"], None)


def test_wildcard_name_matches_subdomains():
    egress = policy("*.example.com")
    assert egress.check_addresses("a.example.com", ["1.1.1.1"]) == (["1.1.1.1"], None)
    assert egress.check_addresses("example.com", ["1.1.1.1"])[1] == (
        "example.com (1.1.1.1) is not on the allowlist"
    )


# URLs

NONCANONICAL = "is a non-canonical form of 127.0.0.1 (write IPv4 addresses as a dotted quad)"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://crm.example.com/x", None),
        ("https://8.8.8.8/", None),
        ("HTTPS://crm.example.com/", None),
        (
            "http://crm.example.com/",
            "plain http is refused (use https, or set http.allow_http: true)",
        ),
        (
            "ftp://crm.example.com/",
            "unsupported URL scheme 'ftp' (only https, or http when allowed)",
        ),
        ("file:///etc/passwd", "unsupported URL scheme 'file' (only https, or http when allowed)"),
        (
            "https://user:pw@crm.example.com/",
            "credentials in the URL are refused (use the webhook's auth)",
        ),
        (
            "https://user@crm.example.com/",
            "credentials in the URL are refused (use the webhook's auth)",
        ),
        ("https:///x", "the URL has no host"),
        ("crm.example.com/x", "the URL is not absolute (it needs https://)"),
        ("https://h:99999/", "the URL is not valid"),
        ("https://127.0.0.1/", "127.0.0.1 is a loopback address (not on the allowlist)"),
        ("https://[::1]:8443/", "::1 is a loopback address (not on the allowlist)"),
        (
            "https://2130706433/",
            "2130706433 " + NONCANONICAL,
        ),
        (
            "https://0x7f000001/",
            "0x7f000001 " + NONCANONICAL,
        ),
        (
            "https://127.1/",
            "127.1 " + NONCANONICAL,
        ),
        (
            "https://0177.0.0.1/",
            "0177.0.0.1 " + NONCANONICAL,
        ),
        ("https://999.1.1.1/", "999.1.1.1 is not a valid IPv4 address"),
        (
            "https://[::ffff:127.0.0.1]/",
            "::ffff:7f00:1 (127.0.0.1) is a loopback address (not on the allowlist)",
        ),
        (
            "https://[::ffff:169.254.169.254]/",
            "::ffff:a9fe:a9fe (169.254.169.254) is a metadata address (not on the allowlist)",
        ),
    ],
)
def test_check_url(url, reason):
    assert policy().check_url(url) == reason


def test_plain_http_allowed_when_configured():
    assert policy(allow_http=True).check_url("http://crm.example.com/") is None


def test_ip_literals_follow_the_allowlist():
    egress = policy("127.0.0.1")
    assert egress.check_url("https://127.0.0.1:8080/") is None
    assert egress.check_url("https://[::ffff:127.0.0.1]/") is None
    assert egress.check_url("https://127.1/") is not None  # numeric forms stay refused


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("crm.example.com", None),
        ("localhost", None),
        ("127.0.0.1", ip_address("127.0.0.1")),
        ("::1", ip_address("::1")),
        ("fe80::1%25eth0", ip_address("fe80::1%eth0")),
    ],
)
def test_host_address(host, address):
    assert host_address(host) == address
