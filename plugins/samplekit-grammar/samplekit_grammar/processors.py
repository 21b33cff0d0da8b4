"""The three structured-output processors: ``json_schema``, ``regex`` and ``grammar``.

Each compiles its constraint when it is constructed (so ``samplekit config validate`` refuses an
invalid schema, pattern or grammar with llguidance's message) and masks, at every step, the
tokens the constraint cannot accept (``samplekit_grammar.constraint.Constraint``). Every parameter
is per row: requests with different schemas, patterns or grammars share one chain run, each row
with its own constraint.
"""

from __future__ import annotations

from samplekit import Param
from samplekit_grammar import sources
from samplekit_grammar.constraint import Constraint


class JsonSchema(Constraint):
    """Constrain each row to JSON that validates against a JSON schema (inline or from a file).

    Give exactly one of ``schema`` (a mapping) and ``schema_file`` (a JSON file holding a mapping,
    or true/false; a relative path is resolved against the current directory). ``whitespace``: "standard" (the
    separators ", " and ": " and no other whitespace, as Python's ``json.dumps``), "compact" (","
    and ":") or "flexible" (any JSON whitespace between tokens; small models may then emit
    whitespace at length). The schema's ``x-guidance`` key sets llguidance's JSON options and wins.
    A row ends with finish reason "constraint" once its JSON value is complete.
    """

    name = "json_schema"
    params = (
        Param("schema", "json", None, "the JSON schema the output must validate against", nullable=True,
              per_row=True),
        Param("schema_file", "str", None, "a JSON file holding the schema (relative to the current directory)",
              nullable=True, nonempty=True, per_row=True),
        Param("whitespace", "str", "standard", "whitespace outside strings: standard (', ' and ': ', as "
              "json.dumps), compact (',' and ':') or flexible (any)", choices=tuple(sources.WHITESPACE), per_row=True),
    )

    def compile_grammar(self) -> str:
        return sources.json_schema_grammar(self.where, self.schema, self.schema_file, self.whitespace)


class Regex(Constraint):
    """Constrain each row to text that the regular expression matches as a whole.

    The syntax is Rust's ``regex`` crate (llguidance's): Perl-like classes, ``\\d``, ``\\w`` and
    ``\\s`` are Unicode-aware, no look-around or back-references. The whole output must match
    (as ``re.fullmatch``). A row ends with finish reason "constraint" once nothing longer can
    match; while a longer match is possible, end-of-text is allowed beside it.
    """

    name = "regex"
    params = (Param("pattern", "str", help="the regular expression the whole output must match", nonempty=True,
                    per_row=True),)

    def compile_grammar(self) -> str:
        return sources.regex_grammar(self.where, self.pattern)


class Grammar(Constraint):
    """Constrain each row to the language of a context-free grammar (Lark or GBNF).

    Give exactly one of ``lark`` (llguidance's Lark dialect: ``start: ...``, terminals as regular
    expressions, ``%json {...}`` for an embedded JSON schema) and ``gbnf`` (llama.cpp's GBNF:
    ``root ::= ...``). A row ends with finish reason "constraint" once the grammar's start rule is
    complete and nothing can follow.
    """

    name = "grammar"
    params = (
        Param("lark", "str", None, "a grammar in llguidance's Lark syntax (start rule: start)", nullable=True,
              nonempty=True, per_row=True),
        Param("gbnf", "str", None, "a grammar in llama.cpp's GBNF syntax (start rule: root)", nullable=True,
              nonempty=True, per_row=True),
    )

    def compile_grammar(self) -> str:
        return sources.text_grammar(self.where, self.lark, self.gbnf)
