"""Commands of nova_tee."""
