"""samplekit-grammar: structured output as processors in the chain, on llguidance.

- ``json_schema``: output that parses as JSON and validates against a JSON schema;
- ``regex``: output that a regular expression matches as a whole;
- ``grammar``: output in the language of a Lark or GBNF grammar.

Each is a filter (``samplekit_grammar.constraint.Constraint``): at every step it sets to -inf the
logit of every token its constraint cannot accept next, keeping one llguidance matcher per row,
and ends a row with finish reason "constraint" when the constraint is complete. A chain with a
constraint in front of a top-k still samples among the top-k's candidates: samplekit's top-k
strategy runs the processors that do not commute with the top-k (the constraint) densely first.
"""

from __future__ import annotations

from samplekit import hookimpl
from samplekit_grammar.constraint import BROKEN, COMPLETE, Constraint
from samplekit_grammar.processors import Grammar, JsonSchema, Regex

__version__ = "0.1.0"
__all__ = ["BROKEN", "COMPLETE", "Constraint", "Grammar", "JsonSchema", "Regex"]


@hookimpl
def register_processors(register):
    register(JsonSchema)
    register(Regex)
    register(Grammar)


@hookimpl
def register_benchmarks(register):
    """``samplekit bench --workload constrained`` (samplekit_grammar.bench)."""
    from samplekit_grammar.bench import CONSTRAINED

    register(CONSTRAINED)
