"""The recommendation service over HTTP (``bookrec serve``), with its web page."""
