"""The ``duro`` command line."""
