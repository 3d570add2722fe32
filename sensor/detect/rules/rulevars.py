"""Rule variables ($HOME_NET, $HTTP_PORTS, ...) with Suricata 7's suricata.yaml defaults
(plus $BULK_PORTS, which netsensor's own ruleset uses).

Suricata keeps address and port variables apart (`vars.address-groups` and
`vars.port-groups`); so do we, so `$HTTP_PORTS` in an address position is an error there
and here alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_ADDRESS_VARS: dict[str, str] = {
    "HOME_NET": "[192.168.0.0/16,10.0.0.0/8,172.16.0.0/12]",
    "EXTERNAL_NET": "!$HOME_NET",
    "HTTP_SERVERS": "$HOME_NET",
    "SMTP_SERVERS": "$HOME_NET",
    "SQL_SERVERS": "$HOME_NET",
    "DNS_SERVERS": "$HOME_NET",
    "TELNET_SERVERS": "$HOME_NET",
    # suricata.yaml ships AIM_SERVERS as $EXTERNAL_NET (not $HOME_NET).
    "AIM_SERVERS": "$EXTERNAL_NET",
    "DC_SERVERS": "$HOME_NET",
    "DNP3_SERVER": "$HOME_NET",
    "DNP3_CLIENT": "$HOME_NET",
    "MODBUS_CLIENT": "$HOME_NET",
    "MODBUS_SERVER": "$HOME_NET",
    "ENIP_CLIENT": "$HOME_NET",
    "ENIP_SERVER": "$HOME_NET",
}

DEFAULT_PORT_VARS: dict[str, str] = {
    "HTTP_PORTS": "80",
    "SHELLCODE_PORTS": "!80",
    "ORACLE_PORTS": "1521",
    "SSH_PORTS": "22",
    "DNP3_PORTS": "20000",
    "MODBUS_PORTS": "502",
    "FILE_DATA_PORTS": "[$HTTP_PORTS,110,143]",
    "FTP_PORTS": "21",
    "GENEVE_PORTS": "6081",
    "VXLAN_PORTS": "4789",
    "TEREDO_PORTS": "3544",
    # not in Suricata's suricata.yaml: netsensor's own ruleset (sid 1000050, large uploads)
    # needs it, and a shipped rule must load with the built-in config too. Ports where a
    # site expects bulk uploads: ssh/scp, HTTP(S), SMB, rsync, NFS, iperf3. Set it for your
    # site in vars.port_groups (and in suricata.yaml to run the ruleset there).
    "BULK_PORTS": "[22,80,443,445,873,2049,5201:5203]",
}


@dataclass(frozen=True)
class RuleVars:
    """Address and port variables, names without the leading `$`."""

    addresses: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_ADDRESS_VARS))
    ports: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_PORT_VARS))


def make_vars(user: RuleVars | Mapping[str, Any] | None = None) -> RuleVars:
    """Defaults overlaid with user values.

    `user` may be a RuleVars, a suricata.yaml-style mapping with `address-groups` and
    `port-groups`, or a flat mapping: there a name that is a default port variable or
    ends in `_PORTS` is a port variable, anything else an address variable.
    """
    if isinstance(user, RuleVars):
        return user
    addrs = dict(DEFAULT_ADDRESS_VARS)
    ports = dict(DEFAULT_PORT_VARS)
    if user:
        if "address-groups" in user or "port-groups" in user:
            addrs.update(_clean(user.get("address-groups") or {}))
            ports.update(_clean(user.get("port-groups") or {}))
        else:
            for name, value in _clean(user).items():
                if name in DEFAULT_PORT_VARS or name.endswith("_PORTS"):
                    ports[name] = value
                else:
                    addrs[name] = value
    return RuleVars(addrs, ports)


def _clean(d: Mapping[str, Any]) -> dict[str, str]:
    return {str(k).lstrip("$"): str(v) for k, v in d.items()}
