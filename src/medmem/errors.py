from pathlib import Path


class InputError(Exception):
    """Bad user input: a file, folder or config value. The message names it and the problem."""


class SkippableInputError(InputError):
    """A bad input that concerns one subject or image only: `--skip-bad` can skip it.

    `problem` is the message without the path, for outputs that must not carry file names.
    """

    def __init__(self, path, problem: str):
        problem = str(problem).replace(str(path), "<file>").replace(Path(path).name, "<file>")
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem

    def __reduce__(self):  # picklable across worker processes
        return (type(self), (self.path, self.problem))
