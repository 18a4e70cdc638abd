"""Helpers shared by management commands."""

from django.core.management.base import CommandError


class BadInput(CommandError):
    """Bad input to a command: exit code 2 (as argparse uses), one line on stderr, nothing changed."""

    def __init__(self, message: str) -> None:
        super().__init__(message, returncode=2)
