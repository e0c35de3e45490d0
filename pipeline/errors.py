"""Typed errors. Each says what is wrong, with which file or field, and how to fix it."""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error the tool reports to the user (exit code 1, no traceback)."""

    exit_code = 1

    def __init__(self, message: str, *, path: str | None = None, field: str | None = None,
                 fix: str | None = None):
        self.message = message
        self.path = str(path) if path is not None else None
        self.field = field
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        where = []
        if self.path:
            where.append(f"file '{self.path}'")
        if self.field:
            where.append(f"field '{self.field}'")
        head = f"{self.message}" + (f" [{', '.join(where)}]" if where else "")
        if self.fix:
            head += f"\n  how to fix: {self.fix}"
        return head


class ConfigError(PipelineError):
    """The configuration file is malformed or inconsistent."""


class InputDataError(PipelineError):
    """An input dataset is missing, unreadable or inconsistent with the configuration."""


class OutputError(PipelineError):
    """An output could not be written (permissions, disk full)."""


class ValidationFailed(PipelineError):
    """Several problems found at once; each is a PipelineError."""

    def __init__(self, problems: list[PipelineError]):
        self.problems = problems
        lines = [f"{len(problems)} problem(s) found; nothing was written:"]
        for i, p in enumerate(problems, 1):
            body = p.render().replace("\n", "\n     ")
            lines.append(f"  {i}. {type(p).__name__}: {body}")
        super().__init__("\n".join(lines))

    def render(self) -> str:  # the message already lists every problem
        return self.message
