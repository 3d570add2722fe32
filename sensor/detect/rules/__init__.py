"""Suricata rule language front end: parser, validator, classification and threshold config.

The matcher consumes `Rule` objects (see parser.py) from `load_rules(...)`.
"""

from .addresses import AddressSet, parse_addresses
from .classification import ClassificationTable, load_classification, parse_classification
from .content import Content, FastPattern, IsDataAt
from .errors import ConfigError, RuleError, RuleSyntaxError
from .intcmp import IntMatch
from .keywords import Flow, Flowbit, FragBits, TcpFlags, Threshold
from .loader import RuleSet, load_rules
from .parser import Rule, RuleParser, parse_rule
from .pcre import Pcre
from .ports import PortSet, parse_ports
from .rulevars import RuleVars, make_vars
from .threshold_config import (
    RateFilter,
    Suppress,
    ThresholdConfig,
    ThresholdEntry,
    load_threshold_config,
    parse_threshold_config,
)

__all__ = [
    "AddressSet", "ClassificationTable", "ConfigError", "Content", "FastPattern", "Flow",
    "Flowbit", "FragBits", "IntMatch", "IsDataAt", "Pcre", "PortSet", "RateFilter", "Rule",
    "RuleError", "RuleParser", "RuleSet", "RuleSyntaxError", "RuleVars", "Suppress",
    "TcpFlags", "Threshold", "ThresholdConfig", "ThresholdEntry", "load_classification",
    "load_rules", "load_threshold_config", "make_vars", "parse_addresses",
    "parse_classification", "parse_ports", "parse_rule", "parse_threshold_config",
]
