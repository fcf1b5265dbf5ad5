"""Text operators for robot columns: ``uppercase`` and ``word_count``.

They read the edited source cell's content from the payload's ``input`` (put there by
the cell-edit trigger) and write their answer to the task's cell. A cleared input
(NULL, empty or only whitespace) clears the robot cell (NULL): there is nothing to put
in capitals or to count, and an empty source should not show ``""`` or ``0`` beside it.

Also the example transformer ``word_stats`` (initial input ``{"text": …}``): counts the
words, asks a person which word to look for, and counts that word.
"""

from __future__ import annotations

from typing import Any

from websurf.worker.app.transformers import Ask, StepInput, register_transformer
from websurf.worker.core.registry import Context, Result, Task, operator

TEXT_TIMEOUT_S = 5.0


CLEARED = Result(output={"cleared": True}, cell_content=None)


def _input(task: Task) -> str | None:
    """The source cell's new content; None when it was cleared."""
    value: Any = task.payload.get("input")
    text = "" if value is None else str(value)
    return text if text.strip() else None


@operator("uppercase", timeout_s=TEXT_TIMEOUT_S)
def uppercase(task: Task, context: Context) -> Result:
    text = _input(task)
    if text is None:
        return CLEARED
    return Result(output={"content": text.upper()}, cell_content=text.upper())


@operator("word_count", timeout_s=TEXT_TIMEOUT_S)
def word_count(task: Task, context: Context) -> Result:
    text = _input(task)
    if text is None:
        return CLEARED
    words = len(text.split())
    return Result(output={"words": words}, cell_content=str(words))


# -- an example transformer: three steps, the second asks a person -------------------


def _text_of(step: StepInput) -> str:
    given = step.initial_input
    return str(given.get("text", "") if isinstance(given, dict) else given or "")


def _count_words(step: StepInput, context: Context) -> dict[str, int]:
    return {"words": len(_text_of(step).split())}


def _ask_word(step: StepInput, context: Context) -> Any:
    if step.answer is None:
        return Ask("Which word should I count?")
    return {"word": step.answer.strip()}


def _count_word(step: StepInput, context: Context) -> dict[str, Any]:
    word = str(step.results[2]["word"]).lower()
    text = _text_of(step).lower().split()
    return {"word": word, "count": text.count(word), "of_words": step.results[1]["words"]}


word_stats = register_transformer(
    "word_stats", [_count_words, _ask_word, _count_word], timeout_s=TEXT_TIMEOUT_S
)
