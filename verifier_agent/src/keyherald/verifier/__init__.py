"""keyherald.verifier: the agent services embed to validate keyherald tokens offline."""
