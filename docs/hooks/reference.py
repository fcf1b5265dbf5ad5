"""MkDocs hook: the reference pages' generated parts, built from the code at each build.

A page asks for one with a marker line, replaced by Markdown:

* ``<!-- websurf:cli -->``: every command of ``websurf.cli.main.cli`` with its usage,
  arguments and options (type, default, environment variable, help), walked through click;
* ``<!-- websurf:configuration -->``: every setting read from the environment (the
  options' ``WEBSURF_*`` variables, and the variables read directly by the code, found in
  its source), then the defaults declared in ``worker/config.py`` with their comments;
* ``<!-- websurf:schema -->``: the tables, columns, indexes, triggers and functions that
  ``sql/migrations`` build (``schema.py`` beside this file; no database needed).

The functions are plain (``cli_markdown()`` …) so tests call them without MkDocs.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import io
import re
import sys
import tokenize
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import click

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MARKER = re.compile(r"^<!-- websurf:(cli|configuration|schema) -->$", re.MULTILINE)
SOURCE_DIRS = ("sql", "worker", "cli")  # the package's folders (websurf.sql, …)
ENV_NAME = re.compile(r"^WEBSURF_[A-Z0-9_]+$")


def _sibling(name: str) -> ModuleType:
    """A module beside this file (MkDocs loads a hook by path, not as a package)."""
    spec = importlib.util.spec_from_file_location(f"websurf_docs_{name}", HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    if spec.name not in sys.modules:  # dataclasses look their module up there
        sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[spec.name])
    return sys.modules[spec.name]


def _cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _commands(
    command: click.Command, path: list[str], parent: click.Context | None
) -> Iterator[tuple[list[str], click.Command, click.Context]]:
    ctx = click.Context(command, info_name=path[-1], parent=parent)
    yield path, command, ctx
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from _commands(sub, [*path, name], ctx)


def _root() -> click.Command:
    from websurf.cli.main import cli

    return cli


def _unset(value: object) -> bool:
    """click's own "no value" sentinel (click 8.3), or nothing."""
    return value is None or value == () or type(value).__name__ == "Sentinel"


def _default(param: click.Parameter, ctx: click.Context) -> str:
    value = param.get_default(ctx, call=False)
    if isinstance(param, click.Option) and param.is_flag and not param.count:
        return "" if param.is_eager else ("on" if value is True else "off")
    if _unset(value) or callable(value):
        return ""
    if isinstance(value, list | tuple):
        return ", ".join(f"`{v}`" for v in value)
    return f"`{value}`"


def _type(param: click.Parameter) -> str:
    if isinstance(param.type, click.Choice):
        return " \\| ".join(f"`{c}`" for c in param.type.choices)
    if isinstance(param, click.Option) and param.is_flag:
        return "flag"
    text = param.type.name
    if isinstance(param.type, click.IntRange | click.FloatRange):
        low, high = param.type.min, param.type.max
        text += f" {'' if low is None else low}..{'' if high is None else high}"
    return text + (", repeatable" if getattr(param, "multiple", False) else "")


def _envvars(param: click.Parameter) -> list[str]:
    envvar = getattr(param, "envvar", None)
    if not envvar:
        return []
    return [envvar] if isinstance(envvar, str) else list(envvar)


EXIT_CODES = {  # where exit codes are named: the commands', the daemon's, its children's
    "cli/render/__init__.py": "any command",
    "worker/daemon/supervisor.py": "`websurf worker`",
    "worker/daemon/child.py": "a worker process (read by the supervisor, never seen outside)",
}


def exit_codes_markdown() -> str:
    """The named exit codes (``EXIT_* = n``) with the comment beside each."""
    out = ["| code | name | of | comment |", "| --- | --- | --- | --- |"]
    for relative, who in EXIT_CODES.items():
        text = (ROOT / relative).read_text(encoding="utf-8")
        comments = _comments(text)
        for node in ast.parse(text).body:
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                name = node.targets[0].id
                if name.startswith("EXIT_") and isinstance(node.value, ast.Constant):
                    said = _cell(comments.get(node.lineno, ""))
                    out.append(f"| {node.value.value} | `{name}` | {who} | {said} |")
    return "\n".join(out) + "\n"


def cli_markdown(root: click.Command | None = None) -> str:
    """Every ``websurf`` command (of ``root``, default the real one), as its ``--help``
    would show it, in tables; the exit codes first."""
    out: list[str] = ["## Exit codes", "", exit_codes_markdown(), "## Commands", ""]
    for path, command, ctx in _commands(root or _root(), ["websurf"], None):
        depth = min(len(path) + 2, 5)
        out += [f"{'#' * depth} `{' '.join(path)}`", ""]
        out += [
            "```",
            " ".join(command.collect_usage_pieces(ctx)).join([ctx.command_path + " ", ""]),
            "```",
            "",
        ]
        help_text = inspect.cleandoc((command.help or "").split("\f")[0])
        if help_text:
            out += [click.unstyle(help_text), ""]
        arguments = [p for p in command.params if isinstance(p, click.Argument)]
        if arguments:
            out += ["| argument | type | required |", "| --- | --- | --- |"]
            for arg in arguments:
                required = "yes" if arg.required else "no"
                out.append(f"| `{arg.human_readable_name}` | {_type(arg)} | {required} |")
            out.append("")
        options = [p for p in command.params if isinstance(p, click.Option) and not p.hidden]
        if options:
            out += [
                "| option | type | default | environment | help |",
                "| --- | --- | --- | --- | --- |",
            ]
            for opt in options:
                flags = ", ".join(f"`{d}`" for d in [*opt.opts, *opt.secondary_opts])
                env = ", ".join(f"`{e}`" for e in _envvars(opt))
                cells = [flags, _type(opt), _default(opt, ctx), env, _cell(opt.help or "")]
                out.append(f"| {' | '.join(cells)} |")
            out.append("")
        if isinstance(command, click.Group):
            subs = command.list_commands(ctx)
            out += ["Commands: " + ", ".join(f"`{' '.join([*path, s])}`" for s in subs) + ".", ""]
    return "\n".join(out)


def _option_settings() -> dict[str, dict[str, Any]]:
    """Environment variable(s) -> the options that read them, with the commands."""
    settings: dict[str, dict[str, Any]] = {}
    for path, command, ctx in _commands(_root(), ["websurf"], None):
        for opt in command.params:
            names = _envvars(opt)
            if not isinstance(opt, click.Option) or not names:
                continue
            row = settings.setdefault(
                ", ".join(names),
                {
                    "option": opt.opts[-1],
                    "commands": [],
                    "default": _default(opt, ctx),
                    "help": opt.help,
                },
            )
            row["commands"].append(" ".join(path[1:]))
    return settings


def _source_reads() -> dict[str, list[tuple[str, str]]]:
    """``WEBSURF_*`` names in the package's source -> (module, what the code says there:
    the comment on that line, else the docstring of the function around it)."""
    reads: dict[str, list[tuple[str, str]]] = {}
    for folder in SOURCE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            tree = ast.parse(text)
            comments = _comments(text)
            functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
            module = "websurf." + ".".join(path.relative_to(ROOT).with_suffix("").parts)
            for node in ast.walk(tree):
                if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                    continue
                if not ENV_NAME.match(node.value):
                    continue
                said = comments.get(node.lineno, "")
                around = [
                    f
                    for f in functions
                    if f.lineno <= node.lineno <= (f.end_lineno or f.lineno)
                    and ast.get_docstring(f)
                ]
                if not said and around:
                    said = (ast.get_docstring(around[-1]) or "").splitlines()[0]
                reads.setdefault(node.value, []).append((module, said))
    return reads


def _comments(text: str) -> dict[int, str]:
    """Line number -> the comment on it."""
    return {
        tok.start[0]: tok.string.lstrip("# ")
        for tok in tokenize.generate_tokens(io.StringIO(text).readline)
        if tok.type == tokenize.COMMENT
    }


def _config_defaults() -> list[tuple[str, str, str]]:
    """(constant, value, comment) for each module-level constant of worker/config.py: the
    comment lines right above it, the one on its line and that one's continuation lines
    (comment-only lines below it that start in lower case)."""
    text = (ROOT / "worker" / "config.py").read_text(encoding="utf-8")
    lines = text.splitlines()
    comments = _comments(text)

    def comment_only(number: int) -> bool:
        return number in comments and lines[number - 1].lstrip().startswith("#")

    rows, claimed = [], set()
    for node in ast.parse(text).body:
        if not (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)):
            continue
        name = node.targets[0].id
        if not name.isupper():
            continue
        above, line = [], node.lineno - 1
        while comment_only(line) and line not in claimed:
            above.insert(0, comments[line])
            line -= 1
        said = [*above, comments.get(node.lineno, "")]
        line = (node.end_lineno or node.lineno) + 1
        while node.lineno in comments and comment_only(line) and comments[line][:1].islower():
            said.append(comments[line])
            claimed.add(line)
            line += 1
        rows.append((name, ast.unparse(node.value), " ".join(s for s in said if s)))
    return rows


def configuration_markdown() -> str:
    """The settings table: from the click options, the code's own reads, worker/config.py."""
    settings = _option_settings()
    total = sum(1 for _ in _commands(_root(), ["websurf"], None)) - 1  # not the group itself
    out = [
        "### Options and their environment variables",
        "",
        "| environment | option | commands | default | what |",
        "| --- | --- | --- | --- | --- |",
    ]
    for env, row in sorted(settings.items()):
        used_by = sorted(set(row["commands"]))
        commands = ", ".join(f"`{c}`" for c in used_by)
        if len(used_by) > 8:
            commands = f"{len(used_by)} commands" + (" (all)" if len(used_by) == total else "")
        env_cell = ", ".join(f"`{e}`" for e in env.split(", "))
        cells = [env_cell, f"`{row['option']}`", commands, row["default"], _cell(row["help"] or "")]
        out.append(f"| {' | '.join(cells)} |")
    covered = {e for env in settings for e in env.split(", ")}
    out += [
        "",
        "### Read from the environment only",
        "",
        "Variables the code reads itself (found in its source), with no option:",
        "",
        "| environment | read in | what the code says |",
        "| --- | --- | --- |",
    ]
    for name, places in sorted(_source_reads().items()):
        if name in covered:
            continue
        modules = ", ".join(sorted({f"`{m}`" for m, _ in places}))
        said = "; ".join(sorted({s for _, s in places if s}))
        out.append(f"| `{name}` | {modules} | {_cell(said)} |")
    out += [
        "",
        "### Defaults of the worker (`worker/config.py`)",
        "",
        "| constant | value | comment |",
        "| --- | --- | --- |",
    ]
    for name, value, said in _config_defaults():
        out.append(f"| `{name}` | `{_cell(value)}` | {_cell(said)} |")
    return "\n".join(out) + "\n"


def schema_markdown(migrations: Path = ROOT / "sql" / "migrations") -> str:
    return str(_sibling("schema").markdown(migrations))


GENERATORS = {
    "cli": cli_markdown,
    "configuration": configuration_markdown,
    "schema": schema_markdown,
}


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Replace each marker with what it names."""
    return MARKER.sub(lambda m: GENERATORS[m.group(1)](), markdown)
