"""Prefect @task wrappers: retries, caching keys and logging around the logic in other packages."""
