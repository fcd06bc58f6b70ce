"""The config: the schema's root (``settings``), reading the file (``load``: YAML, ``${VAR}``,
validation, error locations) and assembling each feature's compiled policy from it
(``assemble``). Each feature owns its own models and compile; gw.config imports them, never
the other way round."""
