"""The import paths of the flat ``worker/`` keep working for one release, with a warning."""

from __future__ import annotations

import importlib
import sys

import pytest

from websurf.worker import moved


@pytest.mark.parametrize("old", sorted(moved.MOVED))
def test_an_old_path_gives_the_moved_module_itself_and_says_where_it_went(old: str) -> None:
    new = importlib.import_module(f"websurf.worker.{moved.MOVED[old]}")
    sys.modules.pop(f"websurf.worker.{old}", None)
    with pytest.warns(DeprecationWarning, match=f"moved to websurf.worker.{moved.MOVED[old]}"):
        aliased = importlib.import_module(f"websurf.worker.{old}")
    assert aliased is new
    assert new.__spec__ is not None and new.__spec__.name == f"websurf.worker.{moved.MOVED[old]}"


def test_an_operator_registered_through_an_old_path_lands_in_the_one_registry() -> None:
    from websurf.worker.core.registry import registry

    sys.modules.pop("websurf.worker.registry", None)
    with pytest.warns(DeprecationWarning):
        old = importlib.import_module("websurf.worker.registry")
    assert old.registry is registry
    assert old.operator is importlib.import_module("websurf.worker.core.registry").operator
