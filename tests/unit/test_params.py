"""One source per parameter: every config key reaches the code, and the commands' defaults are the
schema's (issue 14, point 1)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import yaml

from medmem import params
from medmem.cli import build_parser
from medmem.config import validate_config

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
BLOCKS = ["$defs.stylegan2", "$defs.diffusion", "$defs.external", "memorization", "memorization.planted",
          "memorization.detector", "quality"]


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for word in command.split():
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[word]
    return parser


def _action(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    assert flag in parser._option_string_actions, f"{parser.prog} has no {flag}"
    return parser._option_string_actions[flag]


def _leaves():
    for path in BLOCKS:
        block = params.node(path)
        for key, sub in block["properties"].items():
            sub = params._resolve(sub)
            if sub.get("type") == "object" and "properties" in sub:
                continue  # a nested block, listed on its own
            yield path, block, key, sub


@pytest.mark.parametrize("path,key", [(p, k) for p, _, k, _ in _leaves()])
def test_every_key_says_who_reads_it(path, key):
    sub = params._resolve(params.node(path)["properties"][key])
    assert params._commands(sub), f"{path}.{key} has no x-command: nothing would read it"


def test_command_options_have_the_schema_defaults():
    checked = 0
    for path, block, key, sub in _leaves():
        for command in params._commands(sub):
            if command == "workflow":
                continue
            generator_types = ("stylegan2", "diffusion")
            action = _action(_subparser(command if command != "train" else f"train {path.split('.')[-1]}"),
                             params.option(block, key))
            if command == "sample":  # one command for both types: None, filled per network type
                assert action.default is None
                ns = argparse.Namespace(**{action.dest: None})
                for t in generator_types:
                    other = params.node(f"$defs.{t}")
                    if key in other["properties"]:
                        params.fill_defaults(ns, other, "sample")
                        assert getattr(ns, action.dest) == params.default(other, key)
                        setattr(ns, action.dest, None)
            else:
                assert action.default == params.default(block, key), f"{command} {action.option_strings}"
            checked += 1
    assert checked > 60


def test_workflow_keys_are_read_by_the_rules():
    rules = "\n".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    rules += (REPO / "src" / "medmem" / "config.py").read_text()
    for path, _, key, sub in _leaves():
        if "workflow" in params._commands(sub):
            assert re.search(rf"[\"']{key}[\"']", rules), f"{path}.{key}: no rule reads it"


def test_drifted_defaults_now_agree():
    """The defaults that had drifted (issue 14): checkpoint/snapshot kimg, diffusion's sample batch,
    the CXR held-out share, the options unreachable from the config."""
    assert _action(_subparser("train stylegan2"), "--checkpoint-kimg").default == 200
    assert _action(_subparser("train diffusion"), "--snapshot-kimg").default == 200
    assert _action(_subparser("prepare cxr"), "--holdout-fraction").default == 0.1
    assert _action(_subparser("prepare images"), "--holdout-fraction").default == 0.0
    assert _action(_subparser("train stylegan2"), "--mbstd-group").default == 4
    assert _action(_subparser("train diffusion"), "--snapshot-sampler").default == "dpm-solver++"
    assert "--no-bf16" not in _subparser("train stylegan2")._option_string_actions
    ns = argparse.Namespace(batch=None)
    params.fill_defaults(ns, params.node("$defs.diffusion"), "sample")
    assert ns.batch == 32


def _config(name: str) -> dict:
    config = yaml.safe_load((REPO / "config" / name).read_text())
    return validate_config(config, SCHEMA, REPO, check_paths=False)


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml"])
def test_rules_options_parse_back_to_the_config(name):
    """The options a rule passes (a config block through the schema) parse to exactly that block."""
    config = _config(name)
    for model, m in config["models"].items():
        block = params.node(f"$defs.{m['type']}")
        for command in ("train", "sample"):
            parser = _subparser(f"train {m['type']}" if command == "train" else "sample")
            given = ["data", "out"] if command == "train" else ["network.pt", "out.npy"]
            args = parser.parse_args(given + params.command_args(block, m, command))
            for key in params.keys(block, command):
                dest = params._resolve(block["properties"][key]).get("x-option", key)
                assert getattr(args, dest) == m[key], f"{model}.{key}"
    for path, values, command in [("memorization", config["memorization"], "memorization"),
                                  ("memorization.planted", config["memorization"]["planted"], "plant"),
                                  ("memorization.detector", config["memorization"]["detector"], "detector-train"),
                                  ("quality", config["quality"], "quality")]:
        block = params.node(path)
        positional = {"memorization": ["t", "q", "o"], "plant": ["t", "o", "m"], "detector-train": ["t", "o"],
                      "quality": ["s", "f", "o"]}[command]
        args = _subparser(command).parse_args(positional + params.command_args(block, values, command))
        for key in params.keys(block, command):
            dest = params._resolve(block["properties"][key]).get("x-option", key)
            assert getattr(args, dest) == values[key], f"{path}.{key}"


def test_top_level_seed_is_every_seeds_default():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["seed"] = 7
    config["models"]["diffusion"]["sample_seed"] = 3  # given: kept
    validate_config(config, SCHEMA, REPO, check_paths=False)
    assert config["models"]["stylegan2"]["seed"] == 7 and config["models"]["stylegan2"]["sample_seed"] == 7
    assert config["models"]["diffusion"]["seed"] == 7 and config["models"]["diffusion"]["sample_seed"] == 3
    assert config["memorization"]["planted"]["seed"] == 7 and config["memorization"]["detector"]["seed"] == 7
    assert config["datasets"]["brats20"]["split"]["seed"] == 7


def test_module_defaults_are_the_schemas():
    """The few defaults a stage function keeps for callers outside the CLI equal the schema's."""
    from medmem.memorization.calibration import THRESHOLDS
    from medmem.report import summary

    assert list(THRESHOLDS) == params.default(params.node("memorization"), "thresholds")
    assert summary.columns()[7:10] == [f"share_above_{t:.2f}" for t in THRESHOLDS]


def test_nullable_option_takes_none():
    args = _subparser("train stylegan2").parse_args(["d", "o", "--ema-rampup", "none"])
    assert args.ema_rampup is None
    args = _subparser("train diffusion").parse_args(["d", "o", "--attention"])
    assert args.attention == []
