"""Turning an interview into the agent's Q&A: a pure function, tested directly."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cofounder_contracts import QnA

__all__ = ["answered_questions"]


def answered_questions(questions: Sequence[Any], answers: Mapping[str, Any]) -> list[QnA]:
    """The answered questions, in question order, as ``{"question", "answer"}`` pairs.

    ``questions`` is the session's ``[{"id", "text"}]``; ``answers`` maps question ids to text.
    A question without an answer, or with a blank one, is dropped; answers to ids that are not
    among the questions are ignored; surrounding whitespace is trimmed. Malformed entries (not a
    mapping, no id or text) are skipped rather than failing the build: the founder's other
    answers are still worth more than nothing.
    """
    result: list[QnA] = []
    for question in questions:
        if not isinstance(question, Mapping):
            continue
        qid, text = question.get("id"), question.get("text")
        if qid is None or not isinstance(text, str) or not text.strip():
            continue
        answer = answers.get(str(qid))
        if not isinstance(answer, str) or not answer.strip():
            continue
        result.append(QnA(question=text.strip(), answer=answer.strip()))
    return result
