"""Prefect's console log handler for the `tradingml` command: log lines without tracebacks unless --debug."""

from __future__ import annotations

import logging

from prefect.logging.handlers import PrefectConsoleHandler

from flows.cli import debug_enabled


class CliConsoleHandler(PrefectConsoleHandler):
    """Prefect's console handler, printing a record's message but not its traceback.

    A failed flow run logs its exception with the full traceback; the command then prints
    the error as one line, so the traceback waits for --debug (TRADINGML_DEBUG). Prefect's
    API handler gets the same record untouched: the UI still shows the traceback.
    """

    def emit(self, record: logging.LogRecord) -> None:
        if (record.exc_info or record.exc_text or record.stack_info) and not debug_enabled():
            # A copy: the record is shared with the other handlers (the API's).
            record = logging.makeLogRecord(
                {**record.__dict__, "exc_info": None, "exc_text": None, "stack_info": None}
            )
        super().emit(record)
