"""Lean SQL for hot paths (the per-draft path ``drafts.services.pipeline.message_classify_and_draft``,
the lead's conditional sentiment update in ``leads.services``).

Each of the few statements a draft needs costs more in Django's query compiler
(0.5-2 ms for an annotated select or an ``update()`` with ``Exists``) than in
PostgreSQL and the loopback round trip together (~0.3 ms). These helpers keep
the ORM's semantics where it matters, without the compiler:

- ``update_rows`` prepares every value with the field's own
  ``get_db_prep_save`` (datetimes, JSON, ...), exactly what ``QuerySet.update``
  sends; only the WHERE clause is written by hand.
- ``ModelColumns`` selects a model's concrete columns and builds instances with
  ``Model.from_db`` after the backend's and the field's converters, as the ORM's
  compiler does (so a later encrypted, JSON or decimal field still loads right).

Everything here is portable SQL (PostgreSQL and SQLite); table names come from
the models' ``_meta``; callers always scope their WHERE clause by ``workspace_id``.
Tests cover the paths through ``drafts.services`` and ``leads.services``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import Model


def qn(name: str) -> str:
    return connection.ops.quote_name(name)


def table(model: type[Model]) -> str:
    return qn(model._meta.db_table)


def update_rows(model: type[Model], values: dict[str, Any], where: str, params: Sequence[Any]) -> int:
    """``UPDATE <model> SET <values> WHERE <where>``; returns the number of rows changed."""
    sets, args = [], []
    for name, value in values.items():
        field = model._meta.get_field(name)
        sets.append(f"{qn(field.column)} = %s")
        args.append(field.get_db_prep_save(value, connection))
    with connection.cursor() as cursor:
        # Identifiers from _meta, the caller's WHERE is a literal; values are parameters.
        cursor.execute(f"UPDATE {table(model)} SET {', '.join(sets)} WHERE {where}", [*args, *params])  # noqa: S608
        return cursor.rowcount


class ModelColumns:
    """A model's concrete columns (minus ``exclude``) under a table alias, and the way back to instances."""

    def __init__(self, model: type[Model], alias: str, exclude: Iterable[str] = ()) -> None:
        skip = set(exclude)
        self.model = model
        self.alias = alias
        self.fields = [f for f in model._meta.concrete_fields if f.name not in skip]
        self.attnames = [f.attname for f in self.fields]
        self.sql = ", ".join(f"{alias}.{qn(f.column)}" for f in self.fields)
        self._converters: dict[str, list[tuple[int, Any, list]]] = {}

    def __len__(self) -> int:
        return len(self.fields)

    def _converters_for_vendor(self) -> list[tuple[int, Any, list]]:
        found = self._converters.get(connection.vendor)
        if found is None:
            found = []
            for i, field in enumerate(self.fields):
                col = field.get_col(self.alias)
                converters = connection.ops.get_db_converters(col) + col.get_db_converters(connection)
                if converters:
                    found.append((i, col, converters))
            self._converters[connection.vendor] = found
        return found

    def build(self, values: Sequence[Any]) -> Model:
        """An instance from this model's slice of a row (unselected fields are deferred)."""
        values = list(values)
        for i, col, converters in self._converters_for_vendor():
            value = values[i]
            for converter in converters:
                value = converter(value, col, connection)
            values[i] = value
        return self.model.from_db(connection.alias, self.attnames, values)


@dataclass(frozen=True)
class RowsExist:
    """A typed EXISTS condition over one model's rows, for apps to hand each other instead of SQL
    text: rows with the ``equal`` field values, one of the ``any_equal`` values when given,
    after ``after`` (``((field, value), ...)``, compared as a tuple in that order), and with
    none of ``not_in``'s values in its field. ``sql`` renders it for a statement of the caller
    (names from ``_meta``, values as parameters), so a rule stays one statement on hot paths."""

    model: type[Model]
    equal: tuple[tuple[str, Any], ...]
    any_equal: tuple[tuple[str, Any], ...] = ()
    after: tuple[tuple[str, Any], ...] = ()
    not_in: tuple[str, tuple[Any, ...]] | None = None

    def sql(self, alias: str = "x") -> tuple[str, list[Any]]:
        def col(name: str) -> str:
            return f"{alias}.{qn(self.model._meta.get_field(name).column)}"

        def param(name: str, value: Any) -> Any:
            return self.model._meta.get_field(name).get_db_prep_value(value, connection)

        terms = [f"{col(name)} = %s" for name, _ in self.equal]
        params = [param(name, value) for name, value in self.equal]
        if self.any_equal:
            terms.append("(" + " OR ".join(f"{col(name)} = %s" for name, _ in self.any_equal) + ")")
            params += [param(name, value) for name, value in self.any_equal]
        if self.after:
            # (a, b) > (x, y) spelled out: a > x OR (a = x AND b > y) (portable, index-friendly).
            ors = []
            for i, (name, value) in enumerate(self.after):
                ands = [f"{col(n)} = %s" for n, _ in self.after[:i]] + [f"{col(name)} > %s"]
                ors.append(" AND ".join(ands) if len(ands) == 1 else "(" + " AND ".join(ands) + ")")
                params += [param(n, v) for n, v in self.after[:i]] + [param(name, value)]
            terms.append("(" + " OR ".join(ors) + ")")
        if self.not_in is not None:
            name, values = self.not_in
            terms.append(f"{col(name)} NOT IN ({', '.join(['%s'] * len(values))})")
            params += [param(name, value) for value in values]
        where = " AND ".join(terms) or "TRUE"
        return f"EXISTS (SELECT 1 FROM {table(self.model)} {alias} WHERE {where})", params  # noqa: S608


def rows_exist(condition: RowsExist) -> bool:
    """Whether ``condition`` holds now (one query)."""
    return rows_exist_each([condition])[0]


def rows_exist_each(conditions: Sequence[RowsExist]) -> list[bool]:
    """Whether each of ``conditions`` holds now, in order: one query whatever their number
    (``SELECT EXISTS (...), EXISTS (...), ...``), for batches on hot paths."""
    if not conditions:
        return []
    parts, params = [], []
    for condition in conditions:
        sql, args = condition.sql()
        parts.append(sql)
        params += args
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(parts)}", params)
        return [bool(value) for value in cursor.fetchone()]
