"""Rule files: validation errors name the rule index and field; matching is first-wins."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ktx.core.inject import RuleError, inject, load_rules, parse_rules
from ktx.core.models.registry import RULES_DIR


def _error(data) -> str:
    with pytest.raises(RuleError) as e:
        parse_rules(data, "r.yaml")
    return str(e.value)


def test_bad_regex_names_rule_and_field():
    msg = _error([{"match": {"name": "x"}}, {"match": {"name": "(unclosed"}}])
    assert "rule 1" in msg and "match.name" in msg


def test_unknown_class_names_rule_and_field():
    msg = _error([{"match": {"name": "x"}, "replace": {"class": "ktx.core.ops.nothing.Nope"}}])
    assert "rule 0" in msg and "replace.class" in msg
    msg = _error([{"match": {"class": "torch.nn.NoSuchLayer"}}])
    assert "rule 0" in msg and "match.class" in msg


def test_wrong_device_names_rule_and_field():
    msg = _error([{"match": {"name": "x"}, "replace": {"device": "gpu0"}}])
    assert "rule 0" in msg and "replace.device" in msg


@pytest.mark.parametrize(
    "data, field",
    [
        ({"match": {"name": "x"}}, "YAML list"),
        ([{"replace": {"class": "default"}}], "match"),
        ([{"match": {"regex": "x"}}], "match"),
        ([{"match": {"name": "x"}, "recursive": "no"}], "recursive"),
        ([{"match": {"name": "x"}, "replace": {"kwargs": [1]}}], "replace.kwargs"),
        ([{"match": {"name": "x"}, "extra": 1}], "unknown field"),
    ],
)
def test_malformed_rules(data, field):
    assert field in _error(data)


def test_yaml_syntax_error(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("- match: {name: [unclosed\n")
    with pytest.raises(RuleError, match="not valid YAML"):
        load_rules(p)


def test_shipped_rule_files_load():
    for path in RULES_DIR.glob("*.yaml"):
        assert load_rules(path), path


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(2, 2)
        self.inner = nn.Sequential(nn.Linear(2, 2))


def test_first_matching_rule_wins_and_recursive_false_stops():
    model = nn.Module()
    model.a, model.b = _Block(), _Block()
    rules = parse_rules(
        [
            {"match": {"name": r"^b$"}, "replace": {"class": "default", "device": "cpu"}, "recursive": False},
            {"match": {"class": "torch.nn.Linear"}, "replace": {"class": "default"}},
            {"match": {"name": "proj"}, "replace": {"class": "default"}},
        ]
    )
    report = inject(model, rules, gf=None, config=None, arch="llama", dry_run=True)
    assert report.matched[0] == ["b"]
    # rule 1 wins over rule 2 for a.proj; nothing inside b is visited
    assert sorted(report.matched[1]) == ["a.inner.0", "a.proj"]
    assert 2 not in report.matched
    assert torch.device(report.devices["b"]).type == "cpu"
