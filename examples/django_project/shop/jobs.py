"""The shop's pgjobs App (`PGJOBS_APP`): its database and schema come from the settings."""

import pgjobs

app = pgjobs.App()
