"""The shipped benchmark (``websurf bench``): harness, measurements, plan analysis, report."""
