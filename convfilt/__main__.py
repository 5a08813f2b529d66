"""``python -m convfilt`` runs the command-line tool."""

from convfilt.cli import main

if __name__ == "__main__":
    main()
