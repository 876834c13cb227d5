"""The data layer: every statement pgjobs runs, and the one way it runs them.

`connector.py` runs statements on any kind of connection; `steps.py` is what a plan
asks of it; `sql.py` binds statement text to a schema. The other modules hold the
statements of one user each (producer, claims, maintenance, schedules, inspect, admin)
beside the functions that run them. Nothing here imports from above the data layer.
"""
