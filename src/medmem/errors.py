from pathlib import Path


class InputError(Exception):
    """Bad user input: a file, folder or config value. The message names it and the problem."""


class SkippableInputError(InputError):
    """A bad input that concerns one subject or image only: `--skip-bad` can skip it.

    The message (`str(exc)`, for the terminal and the log) names the real file. `problem` is the
    message without the path, and `redacted()` that text with the file's name and stem replaced by
    `<file>`, for outputs that must carry no file name (chest x-ray file names can be patient ids).
    """

    def __init__(self, path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = str(problem)

    def redacted(self) -> str:
        """`problem` with the path, the file name and its stem replaced by `<file>`."""
        path = Path(self.path)
        text = self.problem.replace(str(self.path), "<file>")
        for name in sorted({path.name, path.name.split(".")[0], path.stem} - {""}, key=len, reverse=True):
            text = text.replace(name, "<file>")
        return text

    def __reduce__(self):  # picklable across worker processes
        return (type(self), (self.path, self.problem))
