"""Community ID v1 against the published reference vectors.

Sources: corelight/community-id-spec baseline/baseline_deflt.json and baseline_seed1.json
(computed by pycommunityid over pcaps/combined.pcap.gz), the tables in baseline/README.md,
and corelight/pycommunityid tests/communityid_test.py. For ICMP rows of the JSON baseline,
"sport"/"dport" are the port equivalents the tool logged (type and counterpart type, or type
and code for one-way types); passing them as type/code gives the same ID because the code
is ignored for two-way types.
"""

from __future__ import annotations

import base64
import socket

import pytest

from sensor.community_id import community_id


def _ip(text: str) -> bytes:
    family = socket.AF_INET6 if ":" in text else socket.AF_INET
    return socket.inet_pton(family, text)


# fmt: off
# (proto, saddr, daddr, sport, dport, id with seed 0, id with seed 1); None ports: port-less.
BASELINE = [
    (58, "fe80::200:86ff:fe05:80da", "fe80::260:97ff:fe07:69ea", 135, 136,
     "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=", "1:kHa1FhMYIT6Ym2Vm2AOtoOARDzY="),
    (58, "fe80::260:97ff:fe07:69ea", "fe80::200:86ff:fe05:80da", 136, 135,
     "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=", "1:kHa1FhMYIT6Ym2Vm2AOtoOARDzY="),
    (58, "fe80::260:97ff:fe07:69ea", "fe80::200:86ff:fe05:80da", 135, 136,
     "1:zavyT/cezQr1fmImYCwYnMXbgck=", "1:2hSqmsDZ2kdcY9kbiUzOEBic0iM="),
    (58, "fe80::200:86ff:fe05:80da", "fe80::260:97ff:fe07:69ea", 136, 135,
     "1:zavyT/cezQr1fmImYCwYnMXbgck=", "1:2hSqmsDZ2kdcY9kbiUzOEBic0iM="),
    (58, "3ffe:501:1800:2345::2", "3ffe:507:0:1:200:86ff:fe05:80da", 3, 0,
     "1:2ObVBgIn28oZvibYZhZMBgh7WdQ=", "1:lVEtCZpYu84Xqaa++3lXFyuu2n4="),
    (58, "3ffe:501:410:0:2c0:dfff:fe47:33e", "3ffe:507:0:1:200:86ff:fe05:80da", 1, 4,
     "1:hLZd0XGWojozrvxqE0dWB1iM6R0=", "1:W8MHwXpWzpoSTD+cGcaJr4u0ys8="),
    (58, "3ffe:507:0:1:200:86ff:fe05:80da", "3ffe:501:0:1001::2", 128, 129,
     "1:+TW+HtLHvV1xnGhV1lv7XoJrqQg=", "1:GfZxjAkDk2MkegpBYHV6tadtFXQ="),
    (58, "3ffe:501:0:1001::2", "3ffe:507:0:1:200:86ff:fe05:80da", 129, 128,
     "1:+TW+HtLHvV1xnGhV1lv7XoJrqQg=", "1:GfZxjAkDk2MkegpBYHV6tadtFXQ="),
    (58, "fe80::200:86ff:fe05:80da", "ff02::2", 133, 134,
     "1:hO+sN4H+MG5MY/8hIrXPqc4ZQz0=", "1:L7Ka0ZMYu+J3bL4ulW2PrqyXNo8="),
    (58, "fe80::260:97ff:fe07:69ea", "ff02::1", 134, 133,
     "1:pkvHqCL88/tg1k4cPigmZXUtL00=", "1:K/ee5UCqAMAQXDorP5nSa2CGLjc="),
    (1, "192.168.0.89", "192.168.0.1", 8, 0,
     "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=", "1:03g6IloqVBdcZlPyX8r0hgoE7kA="),
    (1, "192.168.0.1", "192.168.0.89", 0, 8,
     "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=", "1:03g6IloqVBdcZlPyX8r0hgoE7kA="),
    (1, "10.0.0.1", "10.0.0.2", 11, 0,
     "1:YHxtAirCG//0OzkcVAukqKQN9xM=", "1:XjUibYHaafLQ3pxQeiMI8g25q20="),
    (6, "2001:470:e5bf:dead:4957:2174:e82c:4887", "2607:f8b0:400c:c03::1a", 63943, 25,
     "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4=", "1:eJYTW6AOzFLlSUoESovMjnu7rMw="),
    (6, "2607:f8b0:400c:c03::1a", "2001:470:e5bf:dead:4957:2174:e82c:4887", 25, 63943,
     "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4=", "1:eJYTW6AOzFLlSUoESovMjnu7rMw="),
    (132, "192.168.170.8", "192.168.170.56", 7, 7,
     "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs=", "1:5w3ZRjeKBzqT3zsaEECDGjUbYeg="),
    (132, "192.168.170.56", "192.168.170.8", 7, 7,
     "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs=", "1:5w3ZRjeKBzqT3zsaEECDGjUbYeg="),
    (6, "128.232.110.120", "66.35.250.204", 34855, 80,
     "1:LQU9qZlK+B5F3KDmev6m5PMibrg=", "1:3V71V58M3Ksw/yuFALMcW0LAHvc="),
    (6, "66.35.250.204", "128.232.110.120", 80, 34855,
     "1:LQU9qZlK+B5F3KDmev6m5PMibrg=", "1:3V71V58M3Ksw/yuFALMcW0LAHvc="),
    (17, "192.168.1.52", "8.8.8.8", 54585, 53,
     "1:d/FP5EW3wiY1vCndhwleRRKHowQ=", "1:Q9We8WO3piVF8yEQBNJF4uiSVrI="),
    (17, "8.8.8.8", "192.168.1.52", 53, 54585,
     "1:d/FP5EW3wiY1vCndhwleRRKHowQ=", "1:Q9We8WO3piVF8yEQBNJF4uiSVrI="),
    (46, "10.1.12.1", "10.1.12.2", None, None,
     "1:KHlLkgoJW7ifUTyTSgyVfkFHzKw=", "1:rYir8gphR31noO9iDRQmF/BteEI="),
    (46, "10.1.12.2", "10.1.12.1", None, None,
     "1:KHlLkgoJW7ifUTyTSgyVfkFHzKw=", "1:rYir8gphR31noO9iDRQmF/BteEI="),
]

_V6A = "fe80:0001:0203:0405:0607:0809:0A0B:0C0D"
_V6B = "fe80:1011:1213:1415:1617:1819:1A1B:1C1D"

# baseline/README.md tables: (proto, saddr, daddr, sport, dport, seed 0, seed 1, seed 0 hex).
README_TABLE = [
    (6, "1.2.3.4", "5.6.7.8", 1122, 3344, "1:wCb3OG7yAFWelaUydu0D+125CLM=",
     "1:HhA1B+6CoLbiKPEs5nhNYN4XWfk=", "c026f7386ef200559e95a53276ed03fb5db908b3"),
    (6, "5.6.7.8", "1.2.3.4", 3344, 1122, "1:wCb3OG7yAFWelaUydu0D+125CLM=",
     "1:HhA1B+6CoLbiKPEs5nhNYN4XWfk=", "c026f7386ef200559e95a53276ed03fb5db908b3"),
    (17, "1.2.3.4", "5.6.7.8", 1122, 3344, "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg=",
     "1:OShq+iKDAMVouh/4bMxB9Sz4amw=", "d0cbbd227431eb3e1988264cffb1d78b658c84e8"),
    (17, "5.6.7.8", "1.2.3.4", 3344, 1122, "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg=",
     "1:OShq+iKDAMVouh/4bMxB9Sz4amw=", "d0cbbd227431eb3e1988264cffb1d78b658c84e8"),
    (132, "1.2.3.4", "5.6.7.8", 1122, 3344, "1:EKt4MsxuyaE6mL+hmrEkQ9csDD8=",
     "1:uitchpn5MMGAQKBJh7bIr/bAr7s=", "10ab7832cc6ec9a13a98bfa19ab12443d72c0c3f"),
    (132, "5.6.7.8", "1.2.3.4", 3344, 1122, "1:EKt4MsxuyaE6mL+hmrEkQ9csDD8=",
     "1:uitchpn5MMGAQKBJh7bIr/bAr7s=", "10ab7832cc6ec9a13a98bfa19ab12443d72c0c3f"),
    (1, "1.2.3.4", "5.6.7.8", 8, 0, "1:crodRHL2FEsHjbv3UkRrfbs4bZ0=",
     "1:9pr4ZGTICiuZoIh90RRYE2RyXpU=", "72ba1d4472f6144b078dbbf752446b7dbb386d9d"),
    (1, "5.6.7.8", "1.2.3.4", 0, 0, "1:crodRHL2FEsHjbv3UkRrfbs4bZ0=",
     "1:9pr4ZGTICiuZoIh90RRYE2RyXpU=", "72ba1d4472f6144b078dbbf752446b7dbb386d9d"),
    (1, "1.2.3.4", "5.6.7.8", 11, 0, "1:f/YiSyWqczrTgfUCZlBUnvHRcPk=",
     "1:1DD7cWGC/Yg91YGsQeni8du3pIA=", "7ff6224b25aa733ad381f5026650549ef1d170f9"),
    (58, _V6A, _V6B, 128, 0, "1:0bf7hyMJUwt3fMED7z8LIfRpBeo=",
     "1:IO27GQzPuCtNnwFvjWALMHu5tJE=", "d1b7fb872309530b777cc103ef3f0b21f46905ea"),
    (58, _V6B, _V6A, 129, 0, "1:0bf7hyMJUwt3fMED7z8LIfRpBeo=",
     "1:IO27GQzPuCtNnwFvjWALMHu5tJE=", "d1b7fb872309530b777cc103ef3f0b21f46905ea"),
    (58, _V6A, _V6B, 146, 0, "1:fYC8+pz24E+EhANP1EZhpX0Dw10=",
     "1:Cv4IKJe56BNkF0MBW2YxQ3Nwc3s=", "7d80bcfa9cf6e04f8484034fd44661a57d03c35d"),
    (46, "1.2.3.4", "5.6.7.8", None, None, "1:ikv3kmf89luf73WPz1jOs49S768=",
     "1:/buhqeOmaRCopOZFy9HnoJd5XW8=", "8a4bf79267fcf65b9fef758fcf58ceb38f52efaf"),
    (46, "5.6.7.8", "1.2.3.4", None, None, "1:ikv3kmf89luf73WPz1jOs49S768=",
     "1:/buhqeOmaRCopOZFy9HnoJd5XW8=", "8a4bf79267fcf65b9fef758fcf58ceb38f52efaf"),
    (46, _V6A, _V6B, None, None, "1:wQ/2mwrnXP4lmJcHdGL5ePjR+e0=",
     "1:j6EyyfBzL4vWKHFXgUqb5Az3OxM=", "c10ff69b0ae75cfe259897077462f978f8d1f9ed"),
    (46, _V6B, _V6A, None, None, "1:wQ/2mwrnXP4lmJcHdGL5ePjR+e0=",
     "1:j6EyyfBzL4vWKHFXgUqb5Az3OxM=", "c10ff69b0ae75cfe259897077462f978f8d1f9ed"),
]

# pycommunityid tests/communityid_test.py: (proto, saddr, daddr, sport, dport, seed 0, seed 1).
PYCOMMUNITYID = [
    # ICMP type 20 is one-way: the code is hashed, so codes 0 and 1 differ.
    (1, "192.168.0.89", "192.168.0.1", 20, 0,
     "1:3o2RFccXzUgjl7zDpqmY7yJi8rI=", "1:lCXHHxavE1Vq3oX9NH5ladQg02o="),
    (1, "192.168.0.89", "192.168.0.1", 20, 1,
     "1:tz/fHIDUHs19NkixVVoOZywde+I=", "1:Ie3wmFyxiEyikbsbcO03d2nh+PM="),
    # Echo reply with a non-zero code: the code is ignored for two-way types.
    (1, "192.168.0.1", "192.168.0.89", 0, 20,
     "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=", "1:03g6IloqVBdcZlPyX8r0hgoE7kA="),
    (58, "fe80::200:86ff:fe05:80da", "fe80::260:97ff:fe07:69ea", 135, 0,
     "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=", "1:kHa1FhMYIT6Ym2Vm2AOtoOARDzY="),
    (58, "fe80::260:97ff:fe07:69ea", "fe80::200:86ff:fe05:80da", 136, 0,
     "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=", "1:kHa1FhMYIT6Ym2Vm2AOtoOARDzY="),
    # ICMPv6 type 3 (time exceeded) is one-way: the two directions differ.
    (58, "3ffe:507:0:1:260:97ff:fe07:69ea", "3ffe:507:0:1:200:86ff:fe05:80da", 3, 0,
     "1:NdobDX8PQNJbAyfkWxhtL2Pqp5w=", "1:OlOWx9psIbBFi7lOCw/4MhlKR9M="),
    (58, "3ffe:507:0:1:200:86ff:fe05:80da", "3ffe:507:0:1:260:97ff:fe07:69ea", 3, 0,
     "1:/OGBt9BN1ofenrmSPWYicpij2Vc=", "1:Ij4ZxnC87/MXzhOjvH2vHu7LRmE="),
    (132, "192.168.170.8", "192.168.170.56", 7, 80,
     "1:jQgCxbku+pNGw8WPbEc/TS/uTpQ=", "1:Y1/0jQg6e+I3ZwZZ9LP65DNbTXU="),
    (132, "192.168.170.56", "192.168.170.8", 80, 7,
     "1:jQgCxbku+pNGw8WPbEc/TS/uTpQ=", "1:Y1/0jQg6e+I3ZwZZ9LP65DNbTXU="),
    # pycommunityid issue 3: ports must be compared as numbers, not as strings.
    (6, "10.0.0.1", "10.0.0.2", 10, 11569,
     "1:SXBGMX1lBOwhhoDrZynfROxnhnM=", "1:HmBRGR+fUyXF4t8WEtal7Y0gEAo="),
    (46, "10.1.24.4", "10.1.12.1", None, None,
     "1:/nQI4Rh/TtY3mf0R2gJFBkVlgS4=", "1:BK3BVW3U2eemuwVQVN3zd/GULno="),
    (46, "10.1.12.1", "10.1.24.4", None, None,
     "1:/nQI4Rh/TtY3mf0R2gJFBkVlgS4=", "1:BK3BVW3U2eemuwVQVN3zd/GULno="),
]
# fmt: on


def _cid(proto, saddr, daddr, sport, dport, seed):
    return community_id(_ip(saddr), _ip(daddr), proto, sport or 0, dport or 0, seed=seed)


@pytest.mark.parametrize("row", BASELINE + PYCOMMUNITYID, ids=lambda r: f"{r[0]}-{r[1]}-{r[3]}")
def test_reference_vectors(row):
    proto, saddr, daddr, sport, dport, seed0, seed1 = row
    assert _cid(proto, saddr, daddr, sport, dport, 0) == seed0
    assert _cid(proto, saddr, daddr, sport, dport, 1) == seed1


@pytest.mark.parametrize("row", README_TABLE, ids=lambda r: f"{r[0]}-{r[1]}-{r[3]}")
def test_readme_tables(row):
    proto, saddr, daddr, sport, dport, seed0, seed1, hexdigest = row
    got = _cid(proto, saddr, daddr, sport, dport, 0)
    assert got == seed0
    assert base64.b64decode(got[2:]).hex() == hexdigest
    assert _cid(proto, saddr, daddr, sport, dport, 1) == seed1


def test_portless_protocol_ignores_ports():
    a, b = _ip("10.1.12.1"), _ip("10.1.12.2")
    assert community_id(a, b, 47, 1234, 80) == community_id(a, b, 47, 0, 0)
    assert community_id(a, b, 47, 0, 0) == community_id(b, a, 47, 0, 0)


def test_equal_addresses_order_by_port():
    a = _ip("127.0.0.1")
    assert community_id(a, a, 6, 80, 1234) == community_id(a, a, 6, 1234, 80)
    assert community_id(a, a, 6, 80, 1234) != community_id(a, a, 6, 80, 1235)


def test_accepts_bytes_like():
    a, b = _ip("1.2.3.4"), _ip("5.6.7.8")
    expected = "1:wCb3OG7yAFWelaUydu0D+125CLM="
    assert community_id(bytearray(a), memoryview(b), 6, 1122, 3344) == expected


@pytest.mark.parametrize(
    "args",
    [
        (b"\x01\x02\x03\x04", bytes(16), 6, 1, 2),  # mixed families
        (b"\x01\x02\x03", b"\x01\x02\x03", 6, 1, 2),  # bad length
        (bytes(4), bytes(4), 256, 1, 2),  # proto
        (bytes(4), bytes(4), 6, 65536, 2),  # port
        (bytes(4), bytes(4), 6, -1, 2),
    ],
)
def test_rejects_bad_input(args):
    with pytest.raises(ValueError):
        community_id(*args)


def test_rejects_bad_seed():
    with pytest.raises(ValueError):
        community_id(bytes(4), bytes(4), 6, 1, 2, seed=0x10000)
