"""Django management commands of pgjobs (`manage.py pgjobs_migrate`, `pgjobs_work`)."""
