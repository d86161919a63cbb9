"""Every command line in README.md and docs/RUNBOOK.md names only flags and config keys that exist (issue 20, item 5).

The fenced code blocks are parsed as shell: each `python -m dbops <command> …` against the CLI's argparse parser
(the command, and every `--flag`), each `pulumi config set [--path] <key>` against the settings' known keys (and a
`--path` key's first level). Placeholders (`<ENV>`) and shell syntax around the commands are skipped.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from components.settings import KNOWN_KEYS
from dbops.cli import parser

ROOT = Path(__file__).resolve().parent.parent.parent
DOCS = ("README.md", "docs/RUNBOOK.md")
FENCE = re.compile(r"^( *)```[a-z]*\n(.*?)^\1```", re.S | re.M)
SHELL_STOP = {"|", "||", "&&", ";", "&", ">", ">>", "<", "2>", "2>&1"}
# `--path` sub-keys the settings read for each object-valued key (components/settings.py `_object` calls).
SETTINGS_SOURCE = (ROOT / "components" / "settings.py").read_text()


def command_lines(doc: str) -> list[str]:
    """Each logical shell line (continuations joined, comments dropped) of the doc's fenced blocks."""
    lines: list[str] = []
    for block in FENCE.finditer((ROOT / doc).read_text()):
        text = block.group(2).replace("\\\n", " ")
        for line in text.splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            if line:
                lines.append(line)
    return lines


def words(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError:  # an unbalanced quote in a multi-line example: split on white space
        return line.split()


def invocations(line: str, head: tuple[str, ...]) -> list[list[str]]:
    """The argument lists following each occurrence of `head` in the line, up to a shell operator."""
    found = []
    tokens = words(line)
    for i in range(len(tokens) - len(head) + 1):
        if tuple(t.rsplit("/", 1)[-1] if j == 0 else t for j, t in enumerate(tokens[i:i + len(head)])) == head:
            args = []
            for token in tokens[i + len(head):]:
                if token in SHELL_STOP or token.startswith((">", "2>", "|")) or token.endswith(")\""):
                    break
                args.append(token)
            found.append(args)
    return found


def subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _all_lines() -> list[tuple[str, str]]:
    return [(doc, line) for doc in DOCS for line in command_lines(doc)]


DBOPS_LINES = [(doc, line) for doc, line in _all_lines() if "-m dbops" in line]
CONFIG_LINES = [(doc, line) for doc, line in _all_lines() if "config set" in line]


def test_the_docs_have_commands_to_check() -> None:
    assert len(DBOPS_LINES) >= 15 and len(CONFIG_LINES) >= 10
    assert any("dbops copy" in line for _, line in DBOPS_LINES)


@pytest.mark.parametrize(("doc", "line"), DBOPS_LINES)
def test_dbops_command_lines_name_real_commands_and_flags(doc: str, line: str) -> None:
    commands = subcommands()
    for args in invocations(line, ("-m", "dbops")):
        if not args or args[0].startswith("<") or args[0] in ("[--wait", "..."):
            continue
        command = args[0]
        assert command in commands, f"{doc}: `{line}` names no dbops command {command!r}"
        options = commands[command]._option_string_actions
        for arg in args[1:]:
            flag = arg.lstrip("[").split("=", 1)[0].rstrip("]")
            if flag.startswith("--"):
                assert flag in options, f"{doc}: `{line}`: dbops {command} has no option {flag}"


@pytest.mark.parametrize(("doc", "line"), CONFIG_LINES)
def test_config_set_lines_name_known_keys(doc: str, line: str) -> None:
    for args in invocations(line, ("pulumi", "config", "set")):
        positional = []
        skip_next = False
        for arg in args:
            if skip_next:
                skip_next = False
            elif arg in ("--stack", "-s"):
                skip_next = True
            elif not arg.startswith("-"):
                positional.append(arg)
        assert positional, f"{doc}: `{line}` sets no key"
        key = positional[0]
        namespace, _, name = key.rpartition(":")
        if namespace not in ("", "gaia-db"):
            continue  # another package's key (aws:region, gcp:project)
        top, _, sub = name.partition(".")
        assert top in KNOWN_KEYS, f"{doc}: `{line}` sets {key!r}, not a gaia-db setting ({', '.join(KNOWN_KEYS)})"
        if sub:
            assert "--path" in args, f"{doc}: `{line}` sets the nested {key!r} without --path"
            assert f'"{sub.split(".")[0]}"' in SETTINGS_SOURCE, f"{doc}: `{line}`: {top} has no key {sub!r}"


def test_a_wrong_flag_or_key_would_be_caught() -> None:
    with pytest.raises(AssertionError, match="has no option --enviroment"):
        test_dbops_command_lines_name_real_commands_and_flags("x", "python -m dbops copy --enviroment staging")
    with pytest.raises(AssertionError, match="names no dbops command"):
        test_dbops_command_lines_name_real_commands_and_flags("x", "python -m dbops move --environment staging")
    with pytest.raises(AssertionError, match="not a gaia-db setting"):
        test_config_set_lines_name_known_keys("x", "pulumi config set --stack dev readReplica 2")
    with pytest.raises(AssertionError, match="has no key"):
        test_config_set_lines_name_known_keys("x", "pulumi config set --path aws.identifer gaia-x")
    test_config_set_lines_name_known_keys("x", "pulumi config set --stack dev aws:region us-west-2")
