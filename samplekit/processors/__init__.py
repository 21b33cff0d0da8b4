"""samplekit's built-in processors, one family per module; each module is a plugin."""
