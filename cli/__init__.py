"""The click commands: parse, call a plain function, render, map errors to exit codes."""
