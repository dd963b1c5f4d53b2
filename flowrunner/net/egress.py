"""Egress policy: which destinations a webhook call may reach. Pure: no I/O.

A URL may proceed to name resolution when its scheme is ``https`` (or ``http`` with
``http.allow_http: true``), it carries no credentials (``user:pass@``), and its host is
a name, a canonical IP address or a bracketed IPv6 address. Numeric host forms that a
resolver would turn into an address (``2130706433``, ``0x7f000001``, ``127.1``,
``0177.0.0.1``) are refused outright.

Each address the host resolves to (or the literal address) is then judged on its own:

- without an allowlist, an address is allowed when it is public (:func:`classify`
  returns None);
- with an allowlist, an address is allowed when it is covered by an IP/CIDR entry, or
  when it is public and the host name matches a name entry (``crm.example.com``
  exactly, ``*.example.com`` for any subdomain of example.com, not example.com itself).
  An IP/CIDR entry also covers the IPv4-mapped and NAT64 forms of its addresses.

So an allowlisted *name* whose DNS answer is ``127.0.0.1`` is still refused unless
``127.0.0.1`` is itself covered by an IP/CIDR entry: DNS cannot turn an allowed name
into a private destination (DNS rebinding). The caller connects only to the allowed
addresses, and refuses the destination when none is left.

Addresses are classified with an explicit table rather than ``ipaddress.is_global``,
whose answers have changed between Python releases. IPv6 forms that carry an IPv4
address (mapped, compatible, NAT64, 6to4, Teredo) are judged by the embedded address;
the local-use NAT64 prefix ``64:ff9b:1::/48`` is never public (its embedded address, at
the ``/96`` position, only chooses the reason word).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from urllib.parse import urlsplit

from flowrunner.source.model import HttpPolicy

Address = IPv4Address | IPv6Address

_V4_TABLE = (
    ("169.254.169.254/32", "metadata"),  # AWS, GCP, Azure, OpenStack...
    ("100.100.100.200/32", "metadata"),  # Alibaba Cloud
    ("0.0.0.0/8", "unspecified"),
    ("127.0.0.0/8", "loopback"),
    ("10.0.0.0/8", "private"),
    ("172.16.0.0/12", "private"),
    ("192.168.0.0/16", "private"),
    ("169.254.0.0/16", "link-local"),
    ("100.64.0.0/10", "cgnat"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),  # includes the broadcast address 255.255.255.255
    ("192.0.0.0/24", "reserved"),  # IETF protocol assignments
    ("192.0.2.0/24", "reserved"),  # documentation (TEST-NET-1)
    ("198.51.100.0/24", "reserved"),  # documentation (TEST-NET-2)
    ("203.0.113.0/24", "reserved"),  # documentation (TEST-NET-3)
    ("198.18.0.0/15", "reserved"),  # benchmarking
    ("192.88.99.0/24", "reserved"),  # former 6to4 relay anycast
)

_V6_TABLE = (
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("fd00:ec2::254/128", "metadata"),  # AWS over IPv6
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("fc00::/7", "unique-local"),
    ("ff00::/8", "multicast"),
    ("100::/64", "reserved"),  # discard-only
    ("2001:db8::/32", "reserved"),  # documentation
    ("3fff::/20", "reserved"),  # documentation
    ("2001:2::/48", "reserved"),  # benchmarking
    ("2001:10::/28", "reserved"),  # ORCHID (deprecated)
    ("5f00::/16", "reserved"),  # SRv6 SIDs
)


def _ranges(table: Iterable[tuple[str, str]]) -> tuple[tuple[int, int, str], ...]:
    """``(network, mask, reason)`` as integers: a membership test is one AND."""
    out = []
    for cidr, reason in table:
        net = ip_network(cidr)
        out.append((int(net.network_address), int(net.netmask), reason))
    return tuple(out)


_V4 = _ranges(_V4_TABLE)
_V6 = _ranges(_V6_TABLE)
_PREFIX = {
    name: (int(n.network_address), int(n.netmask))
    for name, n in (
        ("mapped", ip_network("::ffff:0:0/96")),
        ("compatible", ip_network("::/96")),
        ("translated", ip_network("::ffff:0:0:0/96")),
        ("nat64", ip_network("64:ff9b::/96")),
        ("nat64-local", ip_network("64:ff9b:1::/48")),
        ("6to4", ip_network("2002::/16")),
        ("teredo", ip_network("2001::/32")),
        ("global", ip_network("2000::/3")),
    )
}
_M32 = 0xFFFFFFFF
_LOW32 = ("mapped", "compatible", "translated", "nat64", "nat64-local")  # IPv4 in bits 96-127
_REACHES_IPV4 = ("mapped", "nat64")  # connecting to these reaches the IPv4 address they carry


def _in(value: int, prefix: str) -> bool:
    network, mask = _PREFIX[prefix]
    return value & mask == network


def _bits(value: int, first: int, count: int) -> int:
    """``count`` bits of a 128-bit ``value`` starting at bit ``first`` (0 = most significant)."""
    return (value >> (128 - first - count)) & ((1 << count) - 1)


def embedded_ipv4(address: IPv6Address) -> list[IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo)."""
    value = int(address)
    if any(_in(value, prefix) for prefix in _LOW32):
        return [IPv4Address(value & _M32)]
    if _in(value, "6to4"):
        return [IPv4Address(_bits(value, 16, 32))]
    if _in(value, "teredo"):
        return [IPv4Address(_bits(value, 32, 32)), IPv4Address((value & _M32) ^ _M32)]
    return []


def classify(ip: Address) -> str | None:
    """None for a public address, else why it is not: ``loopback``, ``private``...

    The words are ``loopback``, ``private``, ``link-local``, ``cgnat``, ``multicast``,
    ``unspecified``, ``metadata``, ``unique-local``, ``site-local`` and ``reserved``.
    """
    value = int(ip)
    if isinstance(ip, IPv4Address):
        return next((reason for net, mask, reason in _V4 if value & mask == net), None)
    reason = next((reason for net, mask, reason in _V6 if value & mask == net), None)
    if reason is not None:
        return reason
    embedded = embedded_ipv4(ip)
    reason = next((r for r in map(classify, embedded) if r is not None), None)
    if reason is not None or (embedded and not _in(value, "nat64-local")):
        return reason
    # local-use NAT64 is never globally reachable; so is all but 2000::/3 of IPv6
    return None if _in(value, "global") else "reserved"


_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
_NUMERIC = re.compile(r"[0-9]+|0x[0-9a-f]*")


def _ascii_host(name: str) -> str:
    """Lower case, no trailing dot, IDNA-encoded: the form URLs carry to the resolver."""
    name = name.strip().lower().rstrip(".")
    if not name.isascii():
        name = name.encode("idna").decode("ascii")
    return name


def host_address(host: str) -> Address | None:
    """The address a URL host denotes literally, or None when it is a name.

    Raises ValueError (the refusal reason) for a numeric form that is not a canonical
    dotted quad, e.g. ``2130706433`` or ``127.1``: resolvers would accept it.
    """
    if ":" in host:
        try:
            return ip_address(host.replace("%25", "%"))
        except ValueError:
            raise ValueError(f"{host} is not a valid IPv6 address") from None
    bare = host.lower().rstrip(".")
    if not _NUMERIC.fullmatch(bare.rpartition(".")[2]):
        return None
    try:
        return ip_address(host)
    except ValueError:
        pass
    try:
        meaning = socket.inet_ntoa(socket.inet_aton(bare))
    except OSError:
        raise ValueError(f"{host} is not a valid IPv4 address") from None
    raise ValueError(
        f"{host} is a non-canonical form of {meaning} (write IPv4 addresses as a dotted quad)"
    )


@dataclass(frozen=True, slots=True)
class Allowlist:
    """Parsed ``http.allowlist`` entries: exact names, ``*.`` suffixes, IP networks."""

    names: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()  # ".example.com" for "*.example.com"
    networks: tuple[tuple[int, int, int], ...] = ()  # (version, network, mask)

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Allowlist:
        """Raises ValueError naming the first bad entry and what is wrong with it."""
        names: set[str] = set()
        suffixes: list[str] = []
        networks: list[tuple[int, int, int]] = []
        for entry in entries:
            text = entry.strip() if isinstance(entry, str) else ""
            if not text:
                raise ValueError(f"allowlist entry {entry!r} is empty or not a string")
            network = _parse_network(text)
            if network is not None:
                networks.append(network)
            elif text.startswith("*."):
                suffixes.append("." + _parse_name(entry, text[2:]))
            else:
                names.add(_parse_name(entry, text))
        return cls(frozenset(names), tuple(suffixes), tuple(networks))

    def __bool__(self) -> bool:
        return bool(self.names or self.suffixes or self.networks)

    def matches_name(self, host: str) -> bool:
        """Whether host (any case, trailing dot allowed) matches a name or wildcard entry."""
        host = host.lower().rstrip(".")
        return host in self.names or any(host.endswith(s) for s in self.suffixes)

    def covers(self, ip: Address) -> bool:
        """Whether an IP/CIDR entry covers ip, or the IPv4 address it reaches.

        An IPv4-mapped or NAT64 address reaches the IPv4 address it carries; the other
        IPv6 forms (6to4, Teredo...) only pass through it, so they are not covered by it.
        """
        if not self.networks:
            return False
        candidates: list[Address] = [ip]
        if isinstance(ip, IPv6Address) and any(_in(int(ip), p) for p in _REACHES_IPV4):
            candidates.append(IPv4Address(int(ip) & _M32))
        return any(
            c.version == version and int(c) & mask == network
            for c in candidates
            for version, network, mask in self.networks
        )


def _parse_network(text: str) -> tuple[int, int, int] | None:
    """An IP or CIDR entry as ``(version, network, mask)``; None when text is a name."""
    if "/" not in text:
        try:
            ip = ip_address(text)
        except ValueError:
            return None
        full = (1 << ip.max_prefixlen) - 1
        return (ip.version, int(ip), full)
    try:
        net = ip_network(text)
    except ValueError as exc:
        hint = " (write the host name only, not a URL)" if "://" in text else ""
        raise ValueError(f"allowlist entry {text!r} is not a valid CIDR: {exc}{hint}") from None
    return (net.version, int(net.network_address), int(net.netmask))


def _parse_name(entry: str, name: str) -> str:
    """A host name entry in the form URLs carry, or ValueError saying what is wrong."""
    bad = f"allowlist entry {entry!r} is not a host name, IP address or CIDR"
    try:
        host = _ascii_host(name)
    except UnicodeError:
        raise ValueError(bad) from None
    labels = host.split(".")
    if ":" in host:
        raise ValueError(bad + " (ports and IPv6 brackets are not allowed)")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(bad)
    if _NUMERIC.fullmatch(labels[-1]):
        raise ValueError(bad + " (it looks numeric but is not a valid IP address)")
    return host


def _shown(ip: Address, text: str, kind: str) -> str:
    """``text``, followed by the IPv4 address it carries when that one decided ``kind``."""
    if isinstance(ip, IPv6Address):
        carried = next((v for v in embedded_ipv4(ip) if classify(v) == kind), None)
        if carried is not None:
            return f"{text} ({carried})"
    return text


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


class EgressPolicy:
    """The egress rule of a project's ``http`` policy (see the module docstring).

    Building one raises ValueError for a bad allowlist entry. ``enabled: false`` is not
    judged here: the HTTP client refuses every call before looking at the URL.
    """

    def __init__(self, policy: HttpPolicy) -> None:
        self.allow_http = policy.allow_http
        self.allowlist = Allowlist.parse(policy.allowlist)

    def check_url(self, url: str) -> str | None:
        """None when url may proceed to resolution, else why it is refused."""
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            return "the URL is not valid"
        userinfo = parts.username is not None or parts.password is not None
        return self.check_target(parts.scheme, parts.hostname, userinfo=userinfo)

    def check_target(self, scheme: str, host: str | None, *, userinfo: bool) -> str | None:
        """:meth:`check_url` on a URL already split: its scheme, its host (as it will be
        resolved) and whether it carries ``user:password@``."""
        scheme = scheme.lower()
        if not scheme:
            return "the URL is not absolute (it needs https://)"
        if scheme not in ("https", "http"):
            return f"unsupported URL scheme {scheme!r} (only https, or http when allowed)"
        if scheme == "http" and not self.allow_http:
            return "plain http is refused (use https, or set http.allow_http: true)"
        if userinfo:
            return "credentials in the URL are refused (use the webhook's auth)"
        if not host:
            return "the URL has no host"
        try:
            literal = host_address(host)
        except ValueError as exc:
            return str(exc)
        if literal is None:
            return None
        return self.check_addresses(host, [str(literal)])[1]

    def check_addresses(self, host: str, addresses: list[str]) -> tuple[list[str], str | None]:
        """The addresses of host that may be connected to and, when none may, why not."""
        named = self.allowlist.matches_name(host)
        allowed: list[str] = []
        reason: str | None = None
        for text in addresses:
            refusal = self._refusal(host, named, text)
            if refusal is None:
                allowed.append(text)
            elif reason is None:
                reason = refusal
        if allowed:
            return allowed, None
        return [], reason or f"{host} has no address"

    def _refusal(self, host: str, named: bool, text: str) -> str | None:
        try:
            ip = ip_address(text)
        except ValueError:
            return f"{text} is not an IP address"
        if self.allowlist.covers(ip):
            return None
        kind = classify(ip)
        if kind is not None:
            shown = _shown(ip, text, kind)
            if named and self.allowlist:  # the rule is on addresses, never on names alone
                return (
                    f"{host} is on the allowlist, but resolves to {shown}, "
                    f"{_article(kind)} {kind} address; allowlist {text} itself to allow it"
                )
            return f"{shown} is {_article(kind)} {kind} address (not on the allowlist)"
        if named or not self.allowlist:
            return None
        if host.strip("[]").replace("%25", "%") == text:
            return f"{text} is not on the allowlist"
        return f"{host} ({text}) is not on the allowlist"
