"""``python -m convfilt`` runs the command-line tool."""

from convfilt.cli import app

app(prog_name="convfilt")
