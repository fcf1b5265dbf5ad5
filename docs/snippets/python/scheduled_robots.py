from datetime import timedelta

from websurf.worker.core.registry import operator
from websurf.worker.core.schedules import schedule


@schedule("*/15 * * * *", "prices.refresh", payload={"market": "EU"}, timezone="Europe/Paris")
@operator("prices.refresh")
def refresh_prices(task, context): ...


schedule(None, "cleanup", every=timedelta(hours=6), catch_up="skip")
