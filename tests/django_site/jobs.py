"""The tests' `PGJOBS_APP`: retries 2 s apart, so a test sees a job wait for its retry."""

from __future__ import annotations

import pgjobs

app = pgjobs.App(backoff=pgjobs.Backoff(base=2, jitter=0))
