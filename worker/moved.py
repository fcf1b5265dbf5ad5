"""Old import paths of modules that moved into packages, kept for one release.

``websurf.worker.registry`` became ``websurf.worker.core.registry`` and so on (docs/development.md
has the map). Importing an old path gives the very same module object as
the new one, so an operator registered through either lands in the one registry, and warns
with a ``DeprecationWarning`` naming the new path. The aliases go in websurf 0.3.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

PACKAGE = "websurf.worker"
REMOVED_IN = "0.3"

#: old path (under websurf.worker) -> new path (under websurf.worker)
MOVED: dict[str, str] = {
    "registry": "core.registry",
    "queue": "core.queue",
    "payloads": "core.payloads",
    "schedules": "core.schedules",
    "sheets": "app.sheets",
    "transformers": "app.transformers",
    "refresh": "app.refresh",
    "operators": "app.operators",
    "operators.noop": "app.operators.noop",
    "operators.text": "app.operators.text",
    "operators.web": "app.operators.web",
    "operators.bench": "bench.operators",
    "reaper": "maintenance.reaper",
    "pruner": "maintenance.pruner",
    "supervisor": "daemon.supervisor",
    "metrics": "daemon.metrics",
}


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers an old path with the module at its new one (the same object, not a copy)."""

    def __init__(self) -> None:
        self._specs: dict[str, importlib.machinery.ModuleSpec | None] = {}

    def find_spec(
        self, fullname: str, path: object = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        old = fullname.removeprefix(PACKAGE + ".")
        if old == fullname or old not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = f"{PACKAGE}.{MOVED[spec.name.removeprefix(PACKAGE + '.')]}"
        warnings.warn(
            f"{spec.name} moved to {new}; the old path goes in websurf {REMOVED_IN}",
            DeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(new)
        self._specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The import system stamped the alias's spec on the module; give it back its own.
        module.__spec__ = self._specs.pop(module.__spec__.name if module.__spec__ else "", None)


def install() -> None:
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())
