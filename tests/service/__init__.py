"""The tests of the HTTP service (``bookrec serve``), run over real HTTP."""
