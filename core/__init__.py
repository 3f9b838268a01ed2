"""Shared, dependency-light pieces: settings, the symbol universe, bar data-quality rules."""
