"""config.json: loading, validation and conversion into a Plan; the `spec` template and
the `features` document."""
