"""The web side of a ledger: the collector service (`computeproof serve`: app.py over
collector.py, the seed's REST API in seed.py) and the dashboard (dashboard/).

FastAPI, uvicorn and prometheus-client come with the ``server`` extra; nothing outside
this package imports it, so the hooks and the CLI's other commands never load them.
"""
