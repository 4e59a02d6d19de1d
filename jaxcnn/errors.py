"""The one exception type that means "the user gave bad input"."""


class UserError(Exception):
    """Bad input a user can fix: the CLI prints its message as one line and exits with code 2.

    The message says what is wrong and what to do, e.g.
    ``unknown model 'resnet99': choose one of cnn, resnet18, resnet20``.
    """
