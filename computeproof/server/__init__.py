"""The web side of a ledger: the collector service (`computeproof serve`) and the dashboard."""
