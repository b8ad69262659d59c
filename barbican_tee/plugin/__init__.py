"""The tee_sealed secret store plugin and its key handling."""
