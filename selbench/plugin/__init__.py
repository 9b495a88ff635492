"""The plugin seam: hook specifications, the pluggy host that loads entry points, and look-ups by name."""
