"""YAML rule injection: operators replace transformers modules; weights come from the GGUF."""

from .inject import InjectionReport, inject, load_weights, optimize_and_load_gguf
from .rules import Rule, RuleError, load_rules, parse_rules

__all__ = [
    "InjectionReport",
    "Rule",
    "RuleError",
    "inject",
    "load_rules",
    "load_weights",
    "optimize_and_load_gguf",
    "parse_rules",
]
