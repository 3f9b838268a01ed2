"""In-process fakes of external services (loopback only), for tests."""
