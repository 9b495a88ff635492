"""Selection methods shipped with selbench; each registers through the public plugin API only."""
