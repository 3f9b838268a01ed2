"""Every external system behind a small Protocol, with real and offline implementations."""
