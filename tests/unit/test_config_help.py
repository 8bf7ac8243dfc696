"""``tagus config --help`` names every configuration kind an operator can put."""

from __future__ import annotations

from contracts.config import FIXED_KINDS
from ops.cli import build_parser


def test_config_help_lists_every_kind(capsys):
    parser = build_parser()
    try:
        parser.parse_args(["config", "--help"])
    except SystemExit:
        pass
    shown = " ".join(capsys.readouterr().out.split())
    missing = [k for k in FIXED_KINDS if k != "tokens" and k not in shown]
    assert not missing, f"tagus config --help does not name {missing}"
    assert "mapping-<id>" in shown
