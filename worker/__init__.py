"""RQ queues, jobs and the worker entry point."""
