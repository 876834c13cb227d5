"""All of one schema's statements, grouped by who runs them."""

from __future__ import annotations

from pgjobs.data.admin import AdminStatements
from pgjobs.data.claims import ClaimStatements
from pgjobs.data.history import HistoryStatements
from pgjobs.data.inspect import InspectStatements
from pgjobs.data.limits import LimitStatements
from pgjobs.data.maintenance import MaintenanceStatements
from pgjobs.data.schedules import ScheduleStatements
from pgjobs.data.sql import SchemaSQL


class DataLayer:
    """One schema's statements: the producer's are plans over `sql` (data/producer.py);
    the others are grouped here by the part of pgjobs that runs them."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.sql = SchemaSQL(schema)
        self.claims = ClaimStatements(self.sql)  # the worker's hot path
        self.maintenance = MaintenanceStatements(self.sql)  # the worker's upkeep
        self.schedules = ScheduleStatements(self.sql)  # periodic jobs
        self.inspect = InspectStatements(self.sql)  # reading: CLI, admin, testing
        self.admin = AdminStatements(self.sql)  # changing by hand: CLI, admin, testing
        self.limits = LimitStatements(self.sql)  # concurrency and rate limits
        self.history = HistoryStatements(self.sql)  # finished jobs' partitions
