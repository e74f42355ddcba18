"""pytest plugin for mutation runs (scripts/mutation, docs/testing.md): ``-p core.testing.mutation_plugin``.

mutmut runs each mutant's tests in a process forked from one that already ran pytest
sessions, against one reused test database (``--reuse-db``). A child stopped in the
middle of a transactional test (a mutant that hangs hits its CPU limit) never flushes
what that test committed, and every later mutant would fail on those rows: a kill the
tests did not earn. So a session that finds rows left behind empties the tables first
(checked on the tables every such test writes: a flush costs seconds, the check does not).
"""

from __future__ import annotations

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.management import call_command


@pytest.fixture(scope="session", autouse=True)
def _mutation_empty_database(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        # Models by name: this plugin is imported before Django's apps are ready.
        if apps.get_model("workspaces", "Workspace").objects.exists() or get_user_model().objects.exists():
            call_command("flush", interactive=False, verbosity=0)
