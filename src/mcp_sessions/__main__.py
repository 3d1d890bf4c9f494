"""``python -m mcp_sessions`` runs the command line."""

from mcp_sessions.cli import main

main()
