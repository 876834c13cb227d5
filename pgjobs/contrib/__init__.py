"""Integrations with frameworks, each behind an extra of its own (`pgjobs.contrib.django`).

Nothing else in pgjobs imports from here: an integration builds on the public API and
on the connector's one hook for other kinds of connections.
"""
