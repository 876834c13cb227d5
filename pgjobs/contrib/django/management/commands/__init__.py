"""`manage.py pgjobs_migrate` and `manage.py pgjobs_work`, one module each."""
