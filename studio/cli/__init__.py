"""The headless command line: ``studio train|sample|data ...``. Never imports Qt."""
