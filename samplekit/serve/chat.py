"""Chat messages -> a prompt, through the model's own chat template.

A Hugging Face tokenizer (``samplekit.hf``) with a chat template renders the messages with
``apply_chat_template`` (transformers' sandboxed Jinja); a tokenizer without one (the demo
model's tiktoken encoding) cannot serve ``/v1/chat/completions``: a 400 says to use
``/v1/completions``.
"""

from __future__ import annotations

from typing import Any

from samplekit.messages import short_repr
from samplekit.serve import limits
from samplekit.serve.errors import bad

ROLES = ("system", "developer", "user", "assistant", "tool")
MESSAGE_KEYS = ("role", "content", "name")


def template_of(tokenizer) -> Any:
    """The transformers tokenizer behind ``tokenizer`` when it has a chat template, else None."""
    hf = getattr(tokenizer, "hf", None)
    return hf if hf is not None and getattr(hf, "chat_template", None) else None


def messages_of(value: Any) -> list[dict[str, str]]:
    """The ``messages`` field checked: roles, text content (a string or text parts), names."""
    if not isinstance(value, list) or not value:
        raise bad("messages", f"messages: {short_repr(value)} is not allowed; expected a non-empty list of "
                              "{role, content} objects")
    if len(value) > limits.MAX_MESSAGES:
        raise bad("messages", f"messages: {len(value)} messages; at most {limits.MAX_MESSAGES}")
    out = []
    for i, m in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad("messages", f"{where}: {short_repr(m)} is not a message; expected {{role, content}}")
        unknown = [k for k in m if k not in MESSAGE_KEYS]
        if unknown:
            raise bad("messages", f"{where}.{short_repr(unknown[0])[1:-1]}: not supported; a message has "
                                  + ", ".join(MESSAGE_KEYS) + " (tools and images are not supported)")
        role = m.get("role")
        if role not in ROLES:
            raise bad("messages", f"{where}.role: {short_repr(role)} is not allowed; expected one of "
                                  + ", ".join(ROLES))
        out.append({"role": role, "content": _content(m.get("content"), where, role)})
        if m.get("name") is not None:
            if not isinstance(m["name"], str):
                raise bad("messages", f"{where}.name: {short_repr(m['name'])} is not a string")
            out[-1]["name"] = m["name"]
    return out


def _content(content: Any, where: str, role: str) -> str:
    if content is None and role == "assistant":
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad("messages", f"{where}.content[{j}]: only text parts ({{type: text, text}}) are "
                                      f"supported, not {short_repr(part)}")
            texts.append(part["text"])
        return "".join(texts)
    raise bad("messages", f"{where}.content: {short_repr(content)} is not allowed; expected a string or a list "
                          "of text parts")


def render(tokenizer, messages: list[dict[str, str]], *, add_generation_prompt: bool = True,
           model: str = "this model") -> str:
    """The prompt text the model's chat template makes of ``messages``."""
    hf = template_of(tokenizer)
    if hf is None:
        raise bad("messages", f"{model} has no chat template, so it cannot serve /v1/chat/completions: "
                              "send a prompt to /v1/completions instead", code="no_chat_template")
    try:
        text = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as exc:  # noqa: BLE001 - the template's own refusal (roles must alternate, ...)
        raise bad("messages", f"messages: the model's chat template refused them: {exc}") from None
    if not isinstance(text, str):
        raise bad("messages", "messages: the model's chat template did not give text")
    return text
