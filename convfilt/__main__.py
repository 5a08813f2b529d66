"""``python -m convfilt`` runs the command-line tool."""

from convfilt.cli import main

main()
