"""Host adapters for the session workflows: ``memory`` (tests) and ``local`` (a state dir)."""
