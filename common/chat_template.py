"""The kit's Gemma-style turn template, for base models that ship without a chat template.

Gemma has no system role: the system prompt opens the first user turn. The assistant's turn is wrapped in
{% generation %} so that training can put the loss on the assistant's tokens only.
"""

START, END = "<start_of_turn>", "<end_of_turn>"

KIT_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% set sys = namespace(text='', used=false) %}"
    "{% for m in messages if m['role'] == 'system' %}{% set sys.text = m['content'] %}{% endfor %}"
    "{% for m in messages if m['role'] != 'system' %}"
    "{% if m['role'] == 'assistant' %}"
    "<start_of_turn>model\n{% generation %}{{ m['content'] | trim }}<end_of_turn>{% endgeneration %}{{ '\\n' }}"
    "{% else %}"
    "<start_of_turn>user\n"
    "{% if sys.text and not sys.used %}{{ sys.text | trim }}\n\n{% endif %}"
    "{% set sys.used = true %}"
    "{{ m['content'] | trim }}<end_of_turn>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def render_chat(messages: list[dict[str, str]], template: str | None = None, *, add_generation_prompt: bool = True,
                **special_tokens: str) -> str:
    """A conversation as prompt text, rendered exactly as `tokenizer.apply_chat_template(..., tokenize=False)` does.

    transformers' own renderer (its sandboxed jinja environment, with the `{% generation %}` tag), without a
    tokenizer: for clients that send text to a server whose tokenizer is elsewhere (TGI's text route).
    `special_tokens` fill the template's variables such as `bos_token` (empty: the server's tokenizer adds it).
    """
    from transformers.utils.chat_template_utils import render_jinja_template

    special_tokens.setdefault("bos_token", "")
    rendered, _ = render_jinja_template([messages], chat_template=template or KIT_CHAT_TEMPLATE,
                                        add_generation_prompt=add_generation_prompt, **special_tokens)
    return rendered[0]
