"""Makes `core` importable from the repo root whichever way pytest is started."""
