"""Work inside one project database, one module per capability."""
