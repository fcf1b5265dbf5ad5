"""Built-in operators, registered when this package is imported."""

from websurf.worker.operators import noop as noop
