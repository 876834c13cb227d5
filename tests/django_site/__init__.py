"""The Django project of the Django tests (`tests/test_django*.py`), an installed app too.

`settings` reads the database from `PGJOBS_DJANGO_TEST_DATABASE_URL` and the schema from
`PGJOBS_SCHEMA`, so the tests' process (see `fixtures`) and the `manage.py pgjobs_work`
processes they start (see `workers`) share one configuration.
"""
