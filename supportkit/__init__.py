"""The `supportkit` command: parses arguments and dispatches to each step's entry point."""
