"""The ``zbaas`` command."""
