"""The creditmeter command line (typer)."""
