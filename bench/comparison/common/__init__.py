"""What the drivers and scenarios share: setup, subprocesses, tables, timing and report."""
