"""selbench's test kit: its fixtures (builtin_space, tiny_darts_supernet, ...) for every test here."""
pytest_plugins = ["selbench.testing"]
