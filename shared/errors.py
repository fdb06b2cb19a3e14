"""The one error a user's input raises anywhere in the stack: it names the file and the reason."""


class InputError(ValueError):
    """A user's file cannot be used. The message names the file and the reason."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason

    def __reduce__(self):  # picklable across process pools
        return (type(self), (self.name, self.reason))
