"""The interview normalisation rules (no I/O)."""

from __future__ import annotations

from cofounder_context_assembler.normalise import answered_questions
from cofounder_contracts import QnA

QUESTIONS = [
    {"id": "q1", "text": "Who is it for?"},
    {"id": "q2", "text": "What problem does it solve?"},
    {"id": "q3", "text": "What must v1 do?"},
]


def test_answered_questions_in_question_order_unanswered_dropped() -> None:
    answers = {"q3": "Remind me to water", "q1": "Busy renters"}
    assert answered_questions(QUESTIONS, answers) == [
        QnA(question="Who is it for?", answer="Busy renters"),
        QnA(question="What must v1 do?", answer="Remind me to water"),
    ]


def test_blank_answers_and_answers_to_unknown_questions_are_ignored() -> None:
    answers = {"q1": "   ", "q2": "  Plants die  ", "zz": "orphan"}
    assert answered_questions(QUESTIONS, answers) == [
        QnA(question="What problem does it solve?", answer="Plants die"),
    ]


def test_malformed_questions_are_skipped_and_ids_may_be_numbers() -> None:
    questions = [
        "not a mapping",
        {"text": "no id"},
        {"id": 7, "text": "Numbered?"},
        {"id": "q9", "text": ""},
    ]
    assert answered_questions(questions, {"7": "yes", "q9": "no question text"}) == [
        QnA(question="Numbered?", answer="yes"),
    ]


def test_nothing_answered() -> None:
    assert answered_questions(QUESTIONS, {}) == []
    assert answered_questions([], {"q1": "x"}) == []
