"""bookrec's CPU embedding server, SGLang's ``/v1/embeddings`` API on ``transformers``."""
