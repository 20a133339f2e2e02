"""Sans-I/O state of duro: lifecycle tables and limits. No asyncio, no sqlite, no sockets, no
wall clock."""
