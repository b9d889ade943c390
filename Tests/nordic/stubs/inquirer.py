"""Stands in for inquirer, which the tools import for interactive prompts that a run with --port never shows."""


def List(*args, **kwargs):
    raise RuntimeError("inquirer stub: no interactive prompt here")


def prompt(*args, **kwargs):
    raise RuntimeError("inquirer stub: no interactive prompt here")
