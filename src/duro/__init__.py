"""duro: Durable Objects for Python, self-hosted."""
