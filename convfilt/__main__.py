"""``python -m convfilt`` runs the command-line tool."""

from convfilt.cli import run

if __name__ == "__main__":
    run()
