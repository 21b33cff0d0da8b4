"""Chat messages -> a prompt, through the model's own chat template.

A Hugging Face tokenizer (``samplekit.hf``) with a chat template renders the messages with
``apply_chat_template`` (transformers' sandboxed Jinja); a tokenizer without one (the demo
model's tiktoken encoding) cannot serve ``/v1/chat/completions``: a 400 says to use
``/v1/completions``.

Roles: system, developer (rendered as system, which every template knows), user, assistant and
tool; any other is a 400 listing them. Keys of a message beyond role, content and name are
accepted and ignored (as vLLM does), except an assistant's ``tool_calls`` and a tool message's
``tool_call_id``, which reach the template (templates that know tools render them).
"""

from __future__ import annotations

from typing import Any

from samplekit.messages import not_utf8, short_repr
from samplekit.serve import limits
from samplekit.serve.errors import bad

ROLES = ("system", "developer", "user", "assistant", "tool")
RENDERED_AS = {"developer": "system"}
KEPT_KEYS = ("tool_calls", "tool_call_id")  # passed to the template beside role, content and name


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
        role = m.get("role")
        if role not in ROLES:
            hint = " (write function results as role tool)" if role == "function" else ""
            raise bad("messages", f"{where}.role: {short_repr(role)} is not allowed; expected one of "
                                  + ", ".join(ROLES) + hint)
        content = _content(m.get("content"), where, role, bool(m.get("tool_calls")))
        out.append({"role": RENDERED_AS.get(role, role), "content": content})
        for key in KEPT_KEYS:
            if m.get(key) is not None:
                out[-1][key] = m[key]
        if m.get("name") is not None:
            if not isinstance(m["name"], str):
                raise bad("messages", f"{where}.name: {short_repr(m['name'])} is not a string")
            out[-1]["name"] = m["name"]
    return out


def _content(content: Any, where: str, role: str, calls: bool = False) -> str:
    if content is None and (role == "assistant" or calls):
        return ""
    if isinstance(content, str):
        return _text(content, f"{where}.content")
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad("messages", f"{where}.content[{j}]: only text parts ({{type: text, text}}) are "
                                      f"supported, not {short_repr(part)}")
            texts.append(_text(part["text"], f"{where}.content[{j}].text"))
        return "".join(texts)
    raise bad("messages", f"{where}.content: {short_repr(content)} is not allowed; expected a string or a list "
                          "of text parts")


def _text(text: str, where: str) -> str:
    problem = not_utf8(text)
    if problem:
        raise bad("messages", f"{where}: not valid Unicode text ({problem})")
    return text


def render(tokenizer, messages: list[dict[str, str]], *, add_generation_prompt: bool = True,
           model: str = "this model", tools: list[dict] | None = None) -> str:
    """The prompt text the model's chat template makes of ``messages`` (and ``tools``, which
    templates that know tools render)."""
    hf = template_of(tokenizer)
    if hf is None:
        raise bad("messages", f"{model} has no chat template, so it cannot serve /v1/chat/completions: "
                              "send a prompt to /v1/completions instead", code="no_chat_template")
    try:
        text = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                      **({"tools": tools} if tools else {}))
    except Exception as exc:  # noqa: BLE001 - the template's own refusal (roles must alternate, ...)
        raise bad("messages", f"messages: the model's chat template refused them: {exc}") from None
    if not isinstance(text, str):
        raise bad("messages", "messages: the model's chat template did not give text")
    return text
