"""Thin Prefect @flow entry points: parse one config object, build adapters, call tasks."""
