"""The one exception type that means "the user's input is wrong" (the CLI prints it as one line, exit 2)."""


class InputError(ValueError):
    """Bad input from a user: a malformed name, question, file or setting. The message names the problem."""
