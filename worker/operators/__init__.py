"""Built-in operators, registered when this package is imported."""

from websurf.worker.operators import noop as noop
from websurf.worker.operators import text as text
from websurf.worker.operators import web as web
