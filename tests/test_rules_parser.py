"""Rule parser: header, options, payload, header keywords, pcre translation, errors."""

from __future__ import annotations

import ipaddress

import numpy as np
import pytest

from sensor.detect.rules import (
    Content,
    IsDataAt,
    Pcre,
    RuleSyntaxError,
    parse_addresses,
    parse_ports,
    parse_rule,
)

HDR = "alert tcp any any -> any any"


def rule(opts: str, header: str = HDR):
    return parse_rule(f"{header} ({opts})")


def err(opts: str, header: str = HDR) -> str:
    with pytest.raises(RuleSyntaxError) as ei:
        rule(opts, header)
    return ei.value.message


def ip(s: str) -> int:
    return int(ipaddress.ip_address(s))


def test_et_style_rule() -> None:
    r = parse_rule(
        'alert tcp $EXTERNAL_NET any -> $HOME_NET 1433 (msg:"ET SCAN Suspicious inbound to '
        'MSSQL port 1433"; flow:to_server; flags:S; threshold: type limit, count 5, seconds 60, '
        'track by_src; classtype:bad-unknown; sid:2010935; rev:3; metadata:created_at '
        '2010_07_30, confidence Medium;)')
    assert (r.action, r.proto, r.sid, r.rev, r.gid) == ("alert", "tcp", 2010935, 3, 1)
    assert r.flow.direction == "to_server" and r.flags.flags == 0x02
    assert r.threshold.type == "limit" and r.threshold.track == "by_src"
    assert r.threshold.count == 5 and r.threshold.seconds == 60
    assert r.metadata == (("created_at", "2010_07_30"), ("confidence", "Medium"))
    assert r.dst_ports.contains(1433) and not r.dst_ports.contains(80)
    assert r.dst.contains(ip("10.1.2.3"), False) and not r.src.contains(ip("10.1.2.3"), False)
    assert r.src.contains(ip("8.8.8.8"), False)


def test_actions_and_protocols() -> None:
    assert rule("sid:1;", "drop tcp any any -> any any").alert_action == "alert"
    assert rule("sid:1;", "reject tcp any any -> any any").action == "reject"
    assert rule("sid:1;", "pass IP any any <> any any").proto == "ip"
    assert rule("sid:1;", "pass IP any any <> any any").bidirectional
    assert "unsupported protocol 'http'" in err("sid:1;", "alert http any any -> any any")
    assert "unsupported protocol 'icmpv6'" in err("sid:1;", "alert icmpv6 any any -> any any")
    assert "unsupported action" in err("sid:1;", "log tcp any any -> any any")
    assert "direction" in err("sid:1;", "alert tcp any any <- any any")


def test_content_hex_escape_and_modifiers() -> None:
    r = rule(r'content:"uid=0|28|root|29|"; content:!"a\;b\"c\\d\:"; nocase; '
             r'content:"|0d0a|X"; distance:0; within:10; fast_pattern; sid:1;')
    c1, c2, c3 = r.payload
    assert c1.pattern == b"uid=0(root)" and not c1.negated
    assert c2.pattern == b'a;b"c\\d:' and c2.negated and c2.nocase
    assert c3.pattern == b"\r\nX" and c3.distance == 0 and c3.within == 10
    assert c3.fast_pattern is not None and c3.relative
    r = rule('content:"abc"; fast_pattern:1,2; content:"x"; depth:4; offset:1; rawbytes; sid:2;')
    assert r.payload[0].fast_pattern.offset == 1 and r.payload[0].fast_pattern.length == 2
    assert r.payload[1] == Content(b"x", depth=4, offset=1, rawbytes=True)
    assert rule('content:"a"; fast_pattern:only; sid:3;').payload[0].fast_pattern.only


@pytest.mark.parametrize("opts, msg", [
    ('content:"a"; distance:0; depth:5; sid:1;', "can't mix"),
    ('content:"abc"; within:2; sid:1;', "shorter"),
    ('content:"a"; nocase; nocase; sid:1;', "duplicate nocase"),
    ('nocase; content:"a"; sid:1;', "must directly follow a content"),
    ('content:"a|4|"; sid:1;', "incomplete hex"),
    (r'content:"a\nb"; sid:1;', "invalid escape"),
    ('content:""; sid:1;', "empty content"),
    ("content:abc; sid:1;", "double quoted"),
    ('content:"a"; fast_pattern; content:"b"; fast_pattern; sid:1;', "only one content"),
    ('content:!"a"; fast_pattern; distance:0; sid:1;', "negated content"),
    ('content:"abc"; fast_pattern:1,5; sid:1;', "exceeds"),
    ('content:"abc"; fast_pattern:chop; sid:1;', "invalid fast_pattern"),
    ('pcre:"/a/R"; sid:1;', "preceding"),
    ('pcre:"/a/U"; sid:1;', "unsupported pcre modifier 'U'"),
    ('pcre:"/(?|a)/"; sid:1;', "unsupported pcre"),
    ('pcre:"/a{,3}/"; sid:1;', "{,n}"),
    ("ttl:1-2; sid:1;", "invalid ttl"),
    ("ttl:256; sid:1;", "invalid ttl"),
    ("ttl:0x10; sid:1;", "invalid ttl"),
    ("dsize:70000; sid:1;", "invalid dsize"),
    ("flags:!S!; sid:1;", "one modifier"),
    ("flow:to_server,to_client; sid:1;", "conflicting"),
    ("flow:only_frag; sid:1;", "unsupported flow option"),
    ("flowbits:set,a|b; sid:1;", "'|'"),
    ("flowbits:isset,a&b; sid:1;", "'&'"),
    ("flowbits:isset,a; flowbits:isnotset,a; sid:1;", "isset and isnotset"),
    ("threshold:type limit,track by_src,count 1,seconds 6; "
     "detection_filter:track by_src,count 1,seconds 5; sid:1;", "together"),
    ("detection_filter:track by_rule,count 1,seconds 60; sid:1;", "track"),
    ("sid:0;", "invalid sid"),
    ("sid:1; rev:1; rev:2;", "duplicate 'rev'"),
    ('msg:"x";', "missing sid"),
    ("msg:noquotes; sid:1;", "double quoted"),
    ("sid:1", "no terminating ';'"),
    ("ip_proto:6; sid:1;", "ip_proto needs protocol 'ip'"),
])
def test_rejections_match_suricata(opts: str, msg: str) -> None:
    assert msg in err(opts)


def test_unsupported_keywords_are_named() -> None:
    assert err('content:"a"; http.uri; sid:1;') == "unsupported keyword 'http.uri'"
    assert err('content:"a"; http_uri; sid:1;') == "unsupported keyword 'http_uri'"
    assert err("byte_test:1,>,2,0; sid:1;") == "unsupported keyword 'byte_test'"
    # reported even when an earlier option is also bad
    assert err('content:"a"; within:0; dns.query; sid:1;') == "unsupported keyword 'dns.query'"


def test_integer_comparisons() -> None:
    r = rule("ttl:1-3; itype:>8; icode:!0; dsize:>=100; sid:1;", "alert ip any any -> any any")
    assert [r.ttl.matches(v) for v in (1, 2, 3)] == [False, True, False]
    assert r.itype.matches(9) and not r.itype.matches(8)
    assert r.icode.matches(1) and not r.icode.matches(0)
    assert r.dsize.matches(100) and not r.dsize.matches(99)
    assert list(rule("dsize:1<>5; sid:1;").dsize.mask(np.arange(7))) == [
        False, False, True, True, True, False, False]
    assert rule("ttl:<= 64; sid:1;").ttl.matches(64)


def test_header_keywords() -> None:
    r = rule("flags:S+,12; window:!512; seq:0; ack:4294967295; id:5; tos:x10; sameip; "
             "fragbits:*MD; sid:1;")
    assert r.flags.matches(0x02 | 0x10) and r.flags.matches(0x02 | 0x80)
    assert not r.flags.matches(0x10)
    exact = rule("flags:SA; sid:1;").flags
    assert exact.matches(0x12) and not exact.matches(0x13)
    assert rule("flags:S,CE; sid:1;").flags.matches(0x02 | 0xC0)
    assert rule("flags:0; sid:1;").flags.matches(0) and not rule("flags:0; sid:1;").flags.matches(2)
    assert rule("flags:12; sid:1;").flags.flags == 0xC0
    assert r.window.matches(1) and not r.window.matches(512)
    assert (r.seq, r.ack, r.ip_id, r.tos.a, r.sameip) == (0, 4294967295, 5, 16, True)
    assert r.fragbits.matches(0x01) and not r.fragbits.matches(0x04)
    assert rule("fragbits:+D; sid:1;").fragbits.matches(0x03)
    assert not rule("fragbits:+D; sid:1;").fragbits.matches(0x02)
    ipr = rule("ip_proto:!tcp; sid:1;", "alert ip any any -> any any").ip_proto
    assert not ipr.matches(6) and ipr.matches(17)
    assert rule("ip_proto:ipv6-icmp; sid:1;", "alert ip any any -> any any").ip_proto.a == 58
    icmp = rule("icmp_id:0; icmp_seq:2216; itype:8; sid:1;", "alert icmp any any -> any any")
    assert (icmp.icmp_id, icmp.icmp_seq, icmp.itype.a) == (0, 2216, 8)


def test_flow_flowbits_noalert_target_reference() -> None:
    r = rule("flow:from_client, established; flowbits:isset,a|b; flowbits:set,c; "
             "flowbits:noalert; target:dest_ip; reference:url,x.org/a,b; sid:1;")
    assert r.flow.direction == "to_server" and r.flow.established is True
    assert [(f.command, f.names) for f in r.flowbits] == [("isset", ("a", "b")),
                                                          ("set", ("c",))]
    assert r.noalert and r.target == "dest_ip" and r.references == (("url", "x.org/a,b"),)
    f = rule("flow:stateless; sid:1;").flow
    assert f.stateless and f.established is None
    assert rule("flow:to_client,only_stream; sid:1;").flow.stream == "only"


def test_pcre_translation() -> None:
    r = rule(r'content:"SMB"; pcre:"/^\x00/R"; sid:1;')
    p = r.payload[1]
    assert isinstance(p, Pcre) and p.relative
    assert p.search(b"SMB\x00", 3) == (3, 4) and p.search(b"SMB\x01\x00", 3) is None
    g = rule(r'pcre:"/a.+b/G"; sid:1;').payload[0]
    assert g.search(b"axbxb") == (0, 3)  # ungreedy
    g2 = rule(r'pcre:"/a.+?b/G"; sid:1;').payload[0]
    assert g2.search(b"axbxb") == (0, 5)  # G inverts the explicit laziness too
    e = rule(r'pcre:"/foo$/E"; sid:1;').payload[0]
    assert e.search(b"foo") and not e.search(b"foo\n")
    assert rule(r'pcre:"/foo$/"; sid:1;').payload[0].search(b"foo\n")
    z = rule(r'pcre:"/foo\Z/"; sid:1;').payload[0]
    assert z.search(b"foo\n") and z.search(b"foo")
    assert not rule(r'pcre:"/foo\z/"; sid:1;').payload[0].search(b"foo\n")
    a = rule(r'pcre:"/bar/A"; sid:1;').payload[0]
    assert a.search(b"bar") and not a.search(b"xbar")
    m = rule(r'pcre:"/^$/m"; sid:1;').payload[0]
    assert m.search(b"a\n\nb") and not m.search(b"a\n")  # PCRE: no ^ after final newline
    assert rule(r'pcre:"/[[:digit:]]+/"; sid:1;').payload[0].search(b"ab12") == (2, 4)
    assert rule(r'pcre:"/a\vb/"; sid:1;').payload[0].search(b"a\rb")
    assert rule(r'pcre:"/(?<n>x)\k<n>/i"; sid:1;').payload[0].search(b"XX")
    assert rule(r'pcre:!"/evil/i"; sid:1;').payload[0].negated
    assert rule(r'pcre:"/a\;b/"; sid:1;').payload[0].search(b"a;b")


def test_isdataat() -> None:
    r = rule('content:"a"; isdataat:!1,relative; isdataat:5; sid:1;')
    assert r.payload[1:] == (IsDataAt(1, True, True), IsDataAt(5))


def test_address_sets() -> None:
    a = parse_addresses("[10.0.0.0/8,!10.1.0.0/16,[!10.1.2.0/24]]")
    assert a.contains(ip("10.2.0.1"), False)
    assert not a.contains(ip("10.1.0.1"), False) and not a.contains(ip("10.1.2.3"), False)
    neg_list = parse_addresses("[10.0.0.0/8,![10.1.0.0/16,!10.1.2.0/24]]")
    assert neg_list.contains(ip("10.1.2.3"), False) and not neg_list.contains(ip("10.1.3.1"), False)
    # a plain nested list is flattened, as Suricata does: its negation hits the parent too
    flat = parse_addresses("[1.2.3.4,[10.0.0.0/8,!1.2.3.4]]")
    assert not flat.contains(ip("1.2.3.4"), False)
    ext = parse_addresses("$EXTERNAL_NET")
    assert ext.contains(ip("8.8.8.8"), False) and not ext.contains(ip("192.168.1.1"), False)
    assert ext.v6 == ()  # Suricata: a v4-only negation leaves IPv6 empty
    assert parse_addresses("!$EXTERNAL_NET").v4 == parse_addresses("$HOME_NET").v4
    anyset = parse_addresses("any")
    assert anyset.is_any and anyset.contains(ip("::1"), True)
    v6 = parse_addresses("[2001:db8::/32, 1.2.3.4-1.2.3.8, 192.168.0.0/255.255.0.0]")
    assert v6.contains(ip("2001:db8::1"), True) and v6.contains(ip("1.2.3.8"), False)
    assert v6.contains(ip("192.168.9.9"), False) and not v6.contains(ip("1.2.3.9"), False)
    addrs = np.array([ip("10.0.0.1"), ip("8.8.8.8"), ip("172.16.5.5"), 0], dtype=np.uint32)
    assert list(parse_addresses("$HOME_NET").mask_v4(addrs)) == [True, False, True, False]
    assert list(parse_addresses("1.2.3.4/24").v4) == [(ip("1.2.3.0"), ip("1.2.3.255"))]
    for bad, msg in [("!any", "complete"), ("[1.2.3.4,!1.2.3.4]", "no address"),
                     ("$FOO", "not defined"), ("1.2.3.256", "invalid address"),
                     ("[1.2.3.4", "unbalanced"), ("1.2.3.0/255.0.255.0", "invalid address")]:
        with pytest.raises(RuleSyntaxError, match=msg):
            parse_addresses(bad)


def test_port_sets() -> None:
    p = parse_ports("[1024:,!8080,:21]")
    assert p.contains(21) and p.contains(1024) and not p.contains(8080) and not p.contains(80)
    assert parse_ports("!80").contains(81) and not parse_ports("!80").contains(80)
    assert parse_ports("![80,!81]").contains(81) and not parse_ports("![80,!81]").contains(80)
    assert parse_ports("$FILE_DATA_PORTS").ranges == ((80, 80), (110, 110), (143, 143))
    assert not parse_ports("$SHELLCODE_PORTS").contains(80)
    assert list(parse_ports("1:3").mask(np.array([0, 1, 3, 4]))) == [False, True, True, False]
    assert parse_ports("any").literal_any and not parse_ports("0:65535").literal_any
    for bad in ("70000", "10:5", "[1:10,!1:10]", "!any", "$HTTP_SERVERS", "a"):
        with pytest.raises(RuleSyntaxError):
            parse_ports(bad)


def test_ports_on_portless_protocols_load() -> None:
    r = parse_rule("pass IP [100.117.241.0/25,100.117.241.128/27] any -> "
                   "[10.68.242.211,10.68.242.242] [4433,8143] (ip_proto:6; sid:2410020; rev:1;)")
    assert r.dst_ports.contains(4433) and not r.dst_ports.literal_any


def test_user_vars() -> None:
    r = parse_rule("alert tcp $HOME_NET any -> any $WEB_PORTS (sid:1;)",
                   {"HOME_NET": "[192.0.2.0/24]", "WEB_PORTS": "[80,443]"})
    assert r.src.contains(ip("192.0.2.7"), False) and not r.src.contains(ip("10.0.0.1"), False)
    assert r.dst_ports.contains(443)
    with pytest.raises(RuleSyntaxError, match="loop"):
        parse_addresses("$A", {"A": "$B", "B": "[$A]"})


def test_stream_size() -> None:
    """Suricata 7.0.10's grammar (each accepted/refused form checked with `suricata -T`)."""
    r = rule("stream_size:client,>,5; sid:1;")
    assert [(s.side, s.cmp.mode, s.cmp.a) for s in r.stream_size] == [("client", "gt", 5)]
    for value, side, mode, num in (("server,<,0", "server", "lt", 0),
                                   ("both,>=,4294967295", "both", "ge", 4294967295),
                                   ("either,!=,7", "either", "ne", 7),
                                   ("either,!,7", "either", "ne", 7),
                                   (" client , = , 5 ", "client", "eq", 5),
                                   ("client,<=,05", "client", "le", 5)):
        (got,) = rule(f"stream_size:{value}; sid:1;").stream_size
        assert (got.side, got.cmp.mode, got.cmp.a) == (side, mode, num), value
    # several in one rule: all must hold (Suricata accepts this); any protocol loads
    two = rule("stream_size:client,>,10; stream_size:server,<,3; sid:1;")
    assert [s.side for s in two.stream_size] == ["client", "server"]
    assert rule("stream_size:client,>,1; sid:1;", "alert udp any any -> any any").stream_size


@pytest.mark.parametrize("value", [
    "client,=,4294967296", "Client,=,1", "client,==,1", "client,>5", "client,>,-1",
    "client,>,0x10", "client,>,5k", ",>,5", "client,5", "client,>,5,6", "all,>,5",
    "client,<>,5", "client,>,5-9", "client,\t>,5", "client,=>,5", ""])
def test_stream_size_rejections_match_suricata(value: str) -> None:
    """Each of these is refused by Suricata 7.0.10 (`suricata -T`) too."""
    assert "invalid stream_size" in err(f"stream_size:{value}; sid:1;")


def test_stream_size_error_names_the_rule(tmp_path) -> None:  # noqa: ANN001
    from sensor.detect.rules import load_rules

    f = tmp_path / "x.rules"
    f.write_text('alert tcp any any -> any any (msg:"ok"; stream_size:client,>,1; sid:1;)\n'
                 'alert tcp any any -> any any (msg:"bad"; stream_size:client,>>,1; sid:7;)\n')
    rs = load_rules([f])
    assert [r.sid for r in rs.rules] == [1]
    assert [str(e) for e in rs.errors] == [
        f"{f}:2: invalid stream_size 'client,>>,1' (want <server|client|both|either>,<op>,"
        "<number>) in sid 7"]
