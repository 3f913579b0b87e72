"""keyherald.issuer."""
