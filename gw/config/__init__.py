"""The config: its schema (``settings``), loading it (YAML, ``${VAR}``, error locations) and
assembling each feature's compiled policy from it (``assemble``)."""
