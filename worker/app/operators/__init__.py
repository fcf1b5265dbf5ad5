"""Built-in operators, registered when this package is imported."""

from websurf.worker.app.operators import noop as noop
from websurf.worker.app.operators import text as text
from websurf.worker.app.operators import web as web
