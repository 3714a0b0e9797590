"""Operators: modules injected by rules, each with a pure-PyTorch reference path."""
