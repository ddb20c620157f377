"""walkout: the application on top of the pipeline (command line, demo, record, replay, evaluation)."""

__version__ = "0.1.0"
