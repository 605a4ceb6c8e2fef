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
