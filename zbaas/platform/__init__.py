"""Control-plane data: accounts, organizations, projects and API keys."""
