"""What every group of statements shares: its schema's SQL, and one way to run one."""

from __future__ import annotations

from typing import Any

from pgjobs.data.connector import rows
from pgjobs.data.sql import SchemaSQL
from pgjobs.data.steps import Rows, Statement


class StatementGroup:
    """The statements of one user of the data layer (the claims, the admin, ...) for one
    schema, each run on the connection a call is given."""

    def __init__(self, sql: SchemaSQL) -> None:
        self.sql = sql
        self.schema = sql.schema

    def _rows(
        self,
        conn: Any,
        template: str,
        params: Any = None,
        *,
        named: bool = False,
        binary: bool = False,
    ) -> Rows:
        """Run the statement `template` (rendered for this schema) on `conn`."""
        statement = Statement(self.sql.render(template), params, named=named, binary=binary)
        return rows(conn, self.schema, statement)
