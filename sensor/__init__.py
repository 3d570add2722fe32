"""netsensor: a batched network sensor that speaks Suricata's rule syntax and EVE JSON."""

__version__ = "0.1.0"
