"""Generates docs/cli.md from the parsers: every command, flag, default and help.

    python -m axial_deploy.cli.docs -o docs/cli.md     # write it
    python -m axial_deploy.cli.docs --check docs/cli.md  # exit 1 when it is out of date

`flag_table()` is also what tests/cli/test_cli_docs.py reads to check that a flag name carries one
meaning and one default in every command, except the names `args.FLAG_EXCEPTIONS` explains.
Not a command: `axial-deploy` does not list it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from axial_deploy.cli import COMMANDS, _help_of, _load
from axial_deploy.cli.args import FLAG_EXCEPTIONS

# Value types by what they accept: two flags of one name must accept the same kind of value.
_KINDS = {
    "int": "integer",
    "positive_int": "integer",
    "non_negative_int": "integer",
    "float": "number",
    "positive_float": "number",
    "_factor": "number",
    "str": "text",
}


@dataclass(frozen=True)
class Flag:
    """One option of one command, as its parser defines it."""

    command: str
    names: tuple[str, ...]  # current spellings, long ones first as argparse shows them
    old: tuple[str, ...]  # old spellings kept for one release (OldSpelling)
    dest: str
    default: object
    required: bool
    choices: tuple | None
    metavar: str | None
    help: str
    kind: str  # flag (no value), integer, number, text, or the parsing function's name

    @property
    def meaning(self) -> tuple:
        """What must agree between commands for one name: the destination, the kind of value
        and the allowed values."""
        return (self.dest, self.kind, self.choices)


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    """Each command's parser, built as `axial-deploy COMMAND` builds it."""
    parsers = {}
    for name, module_name in COMMANDS.items():
        module = _load(module_name)
        parser = argparse.ArgumentParser(prog=f"axial-deploy {name}", add_help=False)
        module.add_arguments(parser)
        parsers[name] = parser
    return parsers


def _kind(action: argparse.Action) -> str:
    if action.nargs == 0:
        return "flag"
    kind_of = getattr(action.type, "__name__", "str") if action.type else "str"
    return _KINDS.get(kind_of, kind_of)


def _help(action: argparse.Action) -> str:
    text = " ".join((action.help or "").split())
    if "%" in text:  # argparse expands %(default)s and %% the same way
        text = text % {**vars(action), "prog": ""}
    return text


def flags_of(command: str, parser: argparse.ArgumentParser) -> list[Flag]:
    flags = []
    for action in parser._actions:  # argparse keeps no public list of its actions
        if isinstance(action, argparse._HelpAction):
            continue
        old = tuple(o for o in getattr(action, "old", ()) if o in action.option_strings)
        names = tuple(o for o in action.option_strings if o not in old) or (action.dest,)
        flags.append(
            Flag(
                command=command,
                names=names,
                old=old,
                dest=action.dest,
                default=action.default,
                required=bool(action.required) or not action.option_strings,
                choices=tuple(action.choices) if action.choices else None,
                metavar=action.metavar if isinstance(action.metavar, str) else None,
                help=_help(action),
                kind=_kind(action),
            )
        )
    return flags


def flag_table() -> list[Flag]:
    return [flag for name, parser in command_parsers().items() for flag in flags_of(name, parser)]


def by_name(flags: list[Flag]) -> dict[str, list[Flag]]:
    """Long option name (every spelling, old ones included) -> the flags that use it. Short
    names (`-o`) always come with a long one, which stands for both."""
    names: dict[str, list[Flag]] = {}
    for flag in flags:
        for name in (*flag.names, *flag.old):
            if name.startswith("--"):  # positionals are named per command
                names.setdefault(name, []).append(flag)
    return names


def drifts(flags: list[Flag]) -> dict[str, list[str]]:
    """Option names used with more than one meaning or default -> what differs. A required
    flag has no default to differ."""
    found = {}
    for name, users in sorted(by_name(flags).items()):
        problems = []
        meanings = {f.meaning for f in users}
        if len(meanings) > 1:
            problems.append("meanings: " + "; ".join(_describe(f) for f in users))
        optional = [f for f in users if not f.required]
        if len({repr(f.default) for f in optional}) > 1:
            problems.append(
                "defaults: " + ", ".join(f"{f.command} {f.default!r}" for f in optional)
            )
        if problems:
            found[name] = problems
    return found


def _describe(flag: Flag) -> str:
    choices = f" of {', '.join(map(str, flag.choices))}" if flag.choices else ""
    return f"{flag.command} {flag.kind}{choices} -> {flag.dest}"


def _value(flag: Flag) -> str:
    if flag.kind == "flag":
        return ""
    if flag.choices:
        return "{" + ",".join(map(str, flag.choices)) + "}"
    return flag.metavar or flag.dest.upper()


def _default(flag: Flag) -> str:
    if flag.required and flag.default is None:
        return "required"
    if flag.default is None or flag.default is False or flag.default == []:
        return ""
    return f"`{flag.default}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(flags: list[Flag] | None = None) -> str:
    flags = flag_table() if flags is None else flags
    lines = [
        "# Command-line reference",
        "",
        "Generated from the parsers by `python -m axial_deploy.cli.docs -o docs/cli.md`; do not",
        "edit (tests/cli/test_cli_docs.py fails when it differs from the parsers). `axial-deploy",
        "COMMAND --help` prints the same with the command's description.",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    for name, module_name in COMMANDS.items():
        lines.append(f"| [`{name}`](#{name}) | {_cell(_help_of(_load(module_name))[0])} |")
    for name, module_name in COMMANDS.items():
        lines += ["", f"## {name}", "", _help_of(_load(module_name))[0] + ".", ""]
        own = [f for f in flags if f.command == name]
        if not own:
            lines.append("No options.")
            continue
        lines += ["| argument | value | default | help |", "|---|---|---|---|"]
        for flag in own:
            spelled = ", ".join(f"`{n}`" for n in flag.names)
            if flag.old:
                spelled += " (old: " + ", ".join(f"`{n}`" for n in flag.old) + ")"
            value = _value(flag)
            value = f"`{value}`" if value else ""
            lines.append(
                f"| {spelled} | {_cell(value)} | {_cell(_default(flag))} | {_cell(flag.help)} |"
            )
    lines += [
        "",
        "## One name, one meaning",
        "",
        "A flag name means the same thing, with the same default, in every command that has it",
        "(`axial_deploy/cli/args.py` defines the shared ones once). These names differ, and why:",
        "",
        "| flag | why |",
        "|---|---|",
    ]
    lines += [f"| `{name}` | {_cell(reason)} |" for name, reason in sorted(FLAG_EXCEPTIONS.items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m axial_deploy.cli.docs", description=__doc__)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("-o", "--output", metavar="FILE.md", help="write the reference here")
    where.add_argument("--check", metavar="FILE.md", help="exit 1 when FILE.md is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        path = Path(args.check)
        if not path.is_file() or path.read_text() != text:
            print(
                f"{path} is out of date: run python -m axial_deploy.cli.docs -o {path}",
                file=sys.stderr,
            )
            return 1
        print(f"{path} is up to date")
        return 0
    from axial_deploy.artifacts import atomic_output

    with atomic_output(args.output) as tmp:
        tmp.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
