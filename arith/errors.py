"""The one exception type that means "the user's input is wrong" (the CLI prints it as one line, exit 2)."""


class InputError(ValueError):
    """Bad input from a user: a malformed name, question, file or setting. The message names the problem."""


def clip(text: object, limit: int = 80) -> str:
    """`text` cut to at most `limit` characters, for quoting user input in a message (`...` marks a cut)."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[: max(limit - 3, 0)]}... ({len(text):,} characters)"


def plural(n: int, word: str, words: str | None = None) -> str:
    """'1 block', '12 blocks', '240,000 questions': a count and its noun, for messages."""
    return f"{n:,} {word if n == 1 else (words or word + 's')}"
