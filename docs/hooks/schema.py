"""The schema reference, read from sql/migrations/*.sql without a database.

A small parser, honest about what it reads: it splits each file into statements
(respecting quotes, dollar quotes and comments) and follows, in file order,
CREATE TABLE, ALTER TABLE (ADD/DROP/RENAME COLUMN, ADD/DROP CONSTRAINT, RENAME TO),
CREATE/DROP TRIGGER, CREATE [OR REPLACE]/DROP FUNCTION and CREATE/DROP INDEX.
Statements built at run time (EXECUTE inside a DO block: the role grants, 0014's and
0023's repairs) are not read; the page says so. Each object records the migration that
made it and those that changed it, and a function or trigger takes its description from
the comment lines right above its statement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

IDENT = r'(?:"[^"]+"|[A-Za-z_][\w$]*)'
QUALIFIED = rf"{IDENT}(?:\.{IDENT})?"
# Words that end a column's type and start its constraints.
COLUMN_CONSTRAINT = re.compile(
    r"\s+(?=(?:NOT\s+NULL|NULL|DEFAULT|PRIMARY\s+KEY|REFERENCES|CHECK|UNIQUE|CONSTRAINT"
    r"|GENERATED|COLLATE)\b)",
    re.IGNORECASE,
)
TABLE_CONSTRAINT = re.compile(
    r"^(CONSTRAINT|PRIMARY\s+KEY|UNIQUE|CHECK|FOREIGN\s+KEY|EXCLUDE)\b", re.IGNORECASE
)


@dataclass
class Column:
    name: str
    type: str
    details: str
    added_in: str
    changed_in: list[str] = field(default_factory=list)


@dataclass
class Table:
    name: str
    created_in: str
    columns: dict[str, Column] = field(default_factory=dict)
    constraints: dict[str, str] = field(default_factory=dict)  # name -> migration
    indexes: dict[str, str] = field(default_factory=dict)  # name -> migration


@dataclass
class Trigger:
    name: str
    table: str
    timing: str
    function: str
    defined_in: str
    about: str


@dataclass
class Function:
    name: str
    signature: str
    defined_in: str
    about: str
    replaced_in: list[str] = field(default_factory=list)


@dataclass
class Schema:
    migrations: list[str] = field(default_factory=list)
    tables: dict[str, Table] = field(default_factory=dict)
    triggers: dict[tuple[str, str], Trigger] = field(default_factory=dict)
    functions: dict[str, Function] = field(default_factory=dict)


def statements(sql: str) -> list[tuple[str, str]]:
    """(comment right above, statement as written) for each top-level statement of ``sql``."""
    found: list[tuple[str, str]] = []
    comment: list[str] = []
    current: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
            if not "".join(current).strip():
                comment.append(sql[i + 2 : end].strip())
            i = end + 1
            if not "".join(current).strip():
                current = []
            continue
        if sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 2
            continue
        if ch == "\n" and not "".join(current).strip():
            if sql[i + 1 : i + 2] == "\n":
                comment = []  # a blank line: the comment above belongs to nothing
            i += 1
            continue
        if ch in "'\"":
            end = i + 1
            while end < n:
                if sql[end] == ch and sql[end + 1 : end + 2] == ch:
                    end += 2
                    continue
                if sql[end] == ch:
                    break
                end += 1
            current.append(sql[i : end + 1])
            i = end + 1
            continue
        dollar = re.match(r"\$[A-Za-z_]*\$", sql[i:])
        if dollar:
            tag = dollar.group(0)
            end = sql.find(tag, i + len(tag))
            end = n if end < 0 else end + len(tag)
            current.append(sql[i:end])
            i = end
            continue
        if ch == ";":
            text = "".join(current).strip()
            if text:
                found.append((" ".join(comment), text))
            current, comment = [], []
            i += 1
            continue
        current.append(ch)
        i += 1
    if "".join(current).strip():  # a last statement without its semicolon
        found.append((" ".join(comment), "".join(current).strip()))
    return found


def _name(text: str) -> str:
    """An identifier as the catalog shows it: unquoted, ``public.`` dropped."""
    parts = [p.strip('"') if p.startswith('"') else p.lower() for p in text.split(".")]
    return ".".join(parts[1:] if parts[0] == "public" and len(parts) == 2 else parts)


def _top_level(body: str) -> list[str]:
    """``body`` split on the commas outside parentheses and quotes."""
    parts, depth, start, quote = [], 0, 0, ""
    for i, ch in enumerate(body):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(body[start:i].strip())
            start = i + 1
    parts.append(body[start:].strip())
    return [p for p in parts if p]


def _column(definition: str, migration: str) -> Column:
    name, _, rest = definition.partition(" ")
    type_and_details = COLUMN_CONSTRAINT.split(rest, maxsplit=1)
    details = type_and_details[1] if len(type_and_details) > 1 else ""
    return Column(_name(name), type_and_details[0].strip(), details.strip(), migration)


def _summary(comment: str) -> str:
    """The first sentence of a comment block, past a leading "2." or "1(a)" enumerator."""
    comment = re.sub(r"^(\d{1,2}(\([a-z]\))?[.)]?\s+)+", "", comment.strip())
    match = re.match(r"(.{20,}?[.:])(\s|$)", comment)
    return (match.group(1) if match else comment).rstrip(":.") + ("." if comment else "")


def _create_table(schema: Schema, stmt: str, migration: str) -> None:
    match = re.match(
        rf"CREATE (?:UNLOGGED )?TABLE (?:IF NOT EXISTS )?({QUALIFIED}) \((.*)\)", stmt, re.I
    )
    if not match:
        return
    name = _name(match.group(1))
    if name in schema.tables:  # IF NOT EXISTS of a table made earlier
        return
    table = schema.tables[name] = Table(name, migration)
    for item in _top_level(match.group(2)):
        constraint = TABLE_CONSTRAINT.match(item)
        if constraint:
            named = re.match(rf"CONSTRAINT ({IDENT})", item, re.I)
            table.constraints[_name(named.group(1)) if named else item] = migration
        else:
            column = _column(item, migration)
            table.columns[column.name] = column


def _alter_table(schema: Schema, stmt: str, migration: str) -> None:
    match = re.match(rf"ALTER TABLE (?:IF EXISTS )?(?:ONLY )?({QUALIFIED}) (.*)", stmt, re.I)
    if not match or _name(match.group(1)) not in schema.tables:
        return
    table = schema.tables[_name(match.group(1))]
    rename = re.match(rf"RENAME TO ({IDENT})$", match.group(2), re.I)
    if rename:
        table.name = _name(rename.group(1))
        schema.tables[table.name] = schema.tables.pop(_name(match.group(1)))
        return
    for action in _top_level(match.group(2)):
        add = re.match(r"ADD (?:COLUMN )?(?:IF NOT EXISTS )?(.*)", action, re.I)
        if add and not TABLE_CONSTRAINT.match(add.group(1)):
            column = _column(add.group(1), migration)
            table.columns.setdefault(column.name, column)
            continue
        if add:
            named = re.match(rf"CONSTRAINT ({IDENT})", add.group(1), re.I)
            if named:
                table.constraints[_name(named.group(1))] = migration
            continue
        drop = re.match(rf"DROP (COLUMN|CONSTRAINT) (?:IF EXISTS )?({IDENT})", action, re.I)
        if drop:
            store = table.columns if drop.group(1).upper() == "COLUMN" else table.constraints
            store.pop(_name(drop.group(2)), None)  # type: ignore[attr-defined]
            continue
        renamed = re.match(rf"RENAME (?:COLUMN )?({IDENT}) TO ({IDENT})", action, re.I)
        if renamed and _name(renamed.group(1)) in table.columns:
            column = table.columns.pop(_name(renamed.group(1)))
            column.name = _name(renamed.group(2))
            column.changed_in.append(migration)
            table.columns[column.name] = column
            continue
        altered = re.match(rf"ALTER (?:COLUMN )?({IDENT}) (.*)", action, re.I)
        if altered and _name(altered.group(1)) in table.columns:
            column = table.columns[_name(altered.group(1))]
            column.changed_in.append(migration)
            retyped = re.match(r"(?:SET DATA )?TYPE (.*)", altered.group(2), re.I)
            if retyped:
                column.type = retyped.group(1)


def _index(schema: Schema, stmt: str, migration: str) -> None:
    create = re.match(
        rf"CREATE (?:UNIQUE )?INDEX (?:CONCURRENTLY )?(?:IF NOT EXISTS )?({IDENT}) "
        rf"ON (?:ONLY )?({QUALIFIED})",
        stmt,
        re.I,
    )
    if create and _name(create.group(2)) in schema.tables:
        schema.tables[_name(create.group(2))].indexes.setdefault(_name(create.group(1)), migration)
        return
    drop = re.match(rf"DROP INDEX (?:CONCURRENTLY )?(?:IF EXISTS )?({QUALIFIED})", stmt, re.I)
    if drop:
        for table in schema.tables.values():
            table.indexes.pop(_name(drop.group(1)).split(".")[-1], None)


def _trigger(schema: Schema, stmt: str, comment: str, migration: str) -> None:
    create = re.match(
        rf"CREATE (?:OR REPLACE )?(?:CONSTRAINT )?TRIGGER ({IDENT}) "
        rf"((?:BEFORE|AFTER|INSTEAD OF) .*?) ON ({QUALIFIED}) .*?"
        rf"EXECUTE (?:FUNCTION|PROCEDURE) ({QUALIFIED})",
        stmt,
        re.I,
    )
    if create:
        name, table = _name(create.group(1)), _name(create.group(3))
        previous = schema.triggers.get((table, name))
        schema.triggers[(table, name)] = Trigger(
            name,
            table,
            create.group(2),
            _name(create.group(4)),
            migration,
            _summary(comment) if comment else (previous.about if previous else ""),
        )
        return
    drop = re.match(rf"DROP TRIGGER (?:IF EXISTS )?({IDENT}) ON ({QUALIFIED})", stmt, re.I)
    if drop:
        schema.triggers.pop((_name(drop.group(2)), _name(drop.group(1))), None)


def _function(schema: Schema, stmt: str, comment: str, migration: str) -> None:
    create = re.match(rf"CREATE (OR REPLACE )?FUNCTION ({QUALIFIED}) ?(\(.*?\))", stmt, re.I)
    if create:
        name = _name(create.group(2))
        if name.startswith("pg_temp."):  # a helper for the migration itself
            return
        existing = schema.functions.get(name)
        if existing:
            existing.replaced_in.append(migration)
            existing.about = _summary(comment) if comment else existing.about
        else:
            about = _summary(comment) if comment else ""
            signature = " ".join(create.group(3).split())
            schema.functions[name] = Function(name, signature, migration, about)
        return
    drop = re.match(rf"DROP FUNCTION (?:IF EXISTS )?({QUALIFIED})", stmt, re.I)
    if drop:
        schema.functions.pop(_name(drop.group(1)), None)


def read_migrations(directory: Path) -> Schema:
    """The schema the migration files in ``directory`` build, in file order."""
    schema = Schema()
    for path in sorted(directory.glob("[0-9][0-9][0-9][0-9]_*.sql")):
        migration = path.name.split("_", 1)[0]
        schema.migrations.append(path.name)
        _read(schema, path.read_text(encoding="utf-8"), migration)
    return schema


def _read(schema: Schema, sql: str, migration: str) -> None:
    for comment, raw in statements(sql):
        stmt = " ".join(raw.split())
        head = stmt[:40].upper()
        if head.startswith("DO "):
            # A DO block that creates functions or triggers with EXECUTE keeps each
            # statement in a dollar-quoted literal ($fn$ ... $fn$): read those too, with
            # a schema placeholder such as {home}. dropped.
            body = re.match(r"DO\s+(\$\w*\$)(.*)\1", raw, re.S)
            for literal in re.finditer(
                r"\$(\w+)\$(.*?)\$\1\$", body.group(2) if body else "", re.S
            ):
                _read(schema, re.sub(r"\{\w+\}\.", "", literal.group(2)), migration)
            continue
        if re.match(r"CREATE (UNLOGGED )?TABLE", head):
            _create_table(schema, stmt, migration)
        elif head.startswith("ALTER TABLE"):
            _alter_table(schema, stmt, migration)
        elif re.match(r"(CREATE (UNIQUE )?|DROP )INDEX", head):
            _index(schema, stmt, migration)
        elif re.match(r"(CREATE (OR REPLACE )?(CONSTRAINT )?|DROP )TRIGGER", head):
            _trigger(schema, stmt, comment, migration)
        elif re.match(r"(CREATE (OR REPLACE )?|DROP )FUNCTION", head):
            _function(schema, stmt, comment, migration)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _history(first: str, later: list[str]) -> str:
    return first + (f" (changed in {', '.join(later)})" if later else "")


def markdown(directory: Path) -> str:
    """The schema page's generated part: every table with its columns, then the triggers
    and the functions."""
    schema = read_migrations(directory)
    out = [
        f"Read from the {len(schema.migrations)} files in `sql/migrations/` "
        f"({schema.migrations[0]} to {schema.migrations[-1]}) when the site is built. "
        "Statements that a migration builds at run time (inside `DO` blocks: roles, "
        "grants, the CHECK constraints of 0014 and 0023) are not listed here; the "
        "migration files are the full truth.",
        "",
    ]
    for table in sorted(schema.tables.values(), key=lambda t: t.name):
        out += [f"### `{table.name}`", "", f"Created in {table.created_in}.", ""]
        out += ["| column | type | details | migration |", "| --- | --- | --- | --- |"]
        for column in table.columns.values():
            details = f"`{_cell(column.details)}`" if column.details else ""
            history = _history(column.added_in, column.changed_in)
            out.append(f"| `{column.name}` | `{_cell(column.type)}` | {details} | {history} |")
        out.append("")
        if table.constraints:
            named = sorted(n for n in table.constraints if " " not in n)
            if named:
                listed = ", ".join(f"`{n}` ({table.constraints[n]})" for n in named)
                out += [f"Named constraints: {listed}.", ""]
        if table.indexes:
            listed = ", ".join(f"`{n}` ({m})" for n, m in sorted(table.indexes.items()))
            out += [f"Indexes: {listed}.", ""]
        triggers = [t for t in schema.triggers.values() if t.table == table.name]
        if triggers:
            out += ["| trigger | when | runs | migration |", "| --- | --- | --- | --- |"]
            for t in sorted(triggers, key=lambda t: t.name):
                out.append(
                    f"| `{t.name}` | {_cell(t.timing)} | [`{t.function}`](#{_anchor(t.function)})"
                    f" | {t.defined_in} |"
                )
            out.append("")
    out += ["### Functions", ""]
    for fn in sorted(schema.functions.values(), key=lambda f: f.name):
        out += [
            f"#### `{fn.name}` {{#{_anchor(fn.name)}}}",
            "",
            f"`{fn.name}{fn.signature}`, {_history('defined in ' + fn.defined_in, fn.replaced_in)}."
            + (f" {fn.about}" if fn.about else ""),
            "",
        ]
    return "\n".join(out)


def _anchor(name: str) -> str:
    return "fn-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
