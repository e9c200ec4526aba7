"""The worker's log lines: our own at INFO, rq's only from WARNING up.

rq logs every job at INFO (picked up, "Job OK", result kept, "Successfully completed"), the
cron every enqueue, and the worker its registry cleaning every 30 s: with a safety flush
every 10 s and a sweep every 5 s, an idle worker wrote ~240 B/s (66 KB in under five
minutes) saying nothing. Failures still show: rq logs a failed job, a retry and a lost
connection at WARNING or ERROR, and our jobs log at INFO only when they moved something.
"""

from __future__ import annotations

import logging

LOG_FORMAT = "%(asctime)s %(processName)s %(message)s"  # which child said it
RQ_LOGGER_PREFIX = "rq."
RQ_LEVEL_MIN = logging.WARNING


class QuietRq(logging.Filter):
    """Drops rq's records below RQ_LEVEL_MIN. A handler filter, not a logger level: rq sets
    its loggers back to INFO each time a work loop starts."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= RQ_LEVEL_MIN or not record.name.startswith(RQ_LOGGER_PREFIX)


def configure() -> None:
    """INFO to stderr in LOG_FORMAT, rq's chatter left out."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    for handler in logging.getLogger().handlers:
        handler.addFilter(QuietRq())
