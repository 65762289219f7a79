"""Prompt text, written in one place.

The answer format asked for here is one that ``eval.reward.extract_answer`` parses and the training reward
scores (``eval.reward`` is standard-library only and copied verbatim into verl's export, so it cannot import
this module; ``tests/train/test_reward_table.py`` extracts answers written with :data:`ANSWER_PREFIX`).
"""

from __future__ import annotations

from dataclasses import dataclass

from longmill.registry import Registry

#: The phrase the model is asked to end with (QwenLong-L1's format). ``eval.reward`` keys on it.
ANSWER_PREFIX = "Therefore, the answer is"
ANSWER_FORMAT_INSTRUCTION = f'Format your response as follows: "{ANSWER_PREFIX} (insert answer here)".'


def answer_format_instruction() -> str:
    """The sentence that asks for the answer format the reward parses."""
    return ANSWER_FORMAT_INSTRUCTION


@dataclass(frozen=True)
class DocTemplate:
    """How one document is written into the context.

    The header (which carries the document's position) and the body are separate pieces that meet at a
    newline, so the body's token count does not depend on the position and is cached once per document.

    Args:
        name: registry name.
        header: format string with ``{index}`` (1-based), ending in a newline; may be empty.
        body: format string with ``{title}`` and ``{text}``.
    """

    name: str
    header: str
    body: str

    def render_header(self, index: int) -> str:
        return self.header.format(index=index)

    def render_body(self, title: str, text: str) -> str:
        return self.body.format(title=title, text=text) + "\n\n"


DOC_TEMPLATES: Registry[DocTemplate] = Registry("document template")
DOC_TEMPLATES.add("default", DocTemplate("default", "Document {index}:\n", "Title: {title}\n{text}"))
DOC_TEMPLATES.add("passage", DocTemplate("passage", "Passage {index}:\n", "{title}\n{text}"))
DOC_TEMPLATES.add("plain", DocTemplate("plain", "", "{title}\n{text}"))


# The context is framed the way QwenLong-L1 frames DocQA prompts: the text, then the task.
LONGQA_HEAD = "Please read the following text and answer the question below.\n\n<text>\n"
LONGQA_TAIL = "</text>\n\nQuestion: {question}\n\n{format}"

KEYCHAIN_HEAD = (
    "Please read the following text. Hidden in it are JSON key-value pairs such as "
    '{{"<key>": "<value>"}}, in which every key is a UUID and every value is either another UUID '
    "or a question.\n\n<text>\n"
)
#: How the instructions name the head key; ``datagen verify`` reads the head back with it.
HEAD_KEY_PHRASE = "Starting from the key"
KEYCHAIN_TAIL = (
    "</text>\n\n"
    + HEAD_KEY_PHRASE
    + ' "{head}", follow the chain of key-value pairs in the text: find the pair '
    "whose key is the current key; if its value is a UUID, that UUID is the next key. The chain ends "
    "at a value that is a question. Other chains lead to other questions; ignore them. Find the "
    'question at the end of the chain that starts at "{head}", then answer that question using the '
    "documents in the text.\n\n{format}"
)


def longqa_pieces(question: str) -> tuple[str, str]:
    """(head, tail) of a long-QA user message."""
    return LONGQA_HEAD, LONGQA_TAIL.format(question=question, format=ANSWER_FORMAT_INSTRUCTION)


def keychain_pieces(head_key: str) -> tuple[str, str]:
    """(head, tail) of a KeyChain user message; the tail names the head key."""
    return KEYCHAIN_HEAD.format(), KEYCHAIN_TAIL.format(head=head_key, format=ANSWER_FORMAT_INSTRUCTION)
