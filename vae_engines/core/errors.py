"""The one exception type for mistakes a user can fix."""


class UserError(Exception):
    """Bad input: a params typo, a missing file, an artifact that is not what it should be.

    The message is one line that names the problem and says how to fix it. Stage entry
    points print it without a traceback and exit 1; every other exception is a bug and
    keeps its traceback.
    """
