"""callfleet: self-hosted AI phone calls in bulk, behind a drop-in batch-calling API."""

__version__ = "0.1.0"
