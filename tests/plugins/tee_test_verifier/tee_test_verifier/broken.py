"""A plugin whose module fails to import: its format must be refused."""

raise ImportError("tee_test_verifier.broken cannot be imported (on purpose)")
