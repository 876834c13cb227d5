"""The dashboard's pages, one module each: `routes(dashboard)` gives its GET page(s) and
POST actions, served through `dashboard.page` and `dashboard.action`."""
