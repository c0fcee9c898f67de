"""The pure layer: jobs, progress, settings and file helpers. Imports neither torch nor Qt."""
