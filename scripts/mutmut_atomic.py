"""Run mutmut, also mutating functions decorated only with ``transaction.atomic``.

mutmut 3 skips every decorated function (a decorator may have side effects when
the function is defined twice). ``@transaction.atomic`` / ``@transaction.atomic(...)``
has none, and the core of ingestion and lead upsert (``message_ingest``,
``lead_upsert``, ``webhook_event_reprocess``) carries it, so this wrapper lets
mutmut mutate those functions too. The trampoline keeps the decorator, so every
mutant still runs inside its transaction. Other decorators (``functools.cache``:
a cached trampoline would hide the mutant) stay skipped. Used by scripts/mutation.
"""

from __future__ import annotations

import sys

import libcst as cst
from libcst.metadata import PositionProvider
from mutmut.mutation import file_mutation


def _is_transaction_atomic(decorator: cst.BaseExpression) -> bool:
    if isinstance(decorator, cst.Call):
        decorator = decorator.func
    return (
        isinstance(decorator, cst.Attribute)
        and decorator.attr.value == "atomic"
        and isinstance(decorator.value, cst.Name)
        and decorator.value.value == "transaction"
    )


_skip = file_mutation.MutationVisitor._skip_node_and_children


def _skip_node_and_children(self, node: cst.CSTNode) -> bool:
    atomic_only = (
        isinstance(node, cst.FunctionDef)
        and node.decorators
        and all(_is_transaction_atomic(d.decorator) for d in node.decorators)
    )
    if not atomic_only:
        return _skip(self, node)
    position = self.get_metadata(PositionProvider, node, None)
    if position and position.start.line in self._ignored_node_lines:  # "# pragma: no mutate block"
        return _skip(self, node)
    return node.name.value in file_mutation.NEVER_MUTATE_FUNCTION_NAMES


file_mutation.MutationVisitor._skip_node_and_children = _skip_node_and_children

if __name__ == "__main__":
    from mutmut.__main__ import cli

    sys.argv[0] = "mutmut"
    cli()
