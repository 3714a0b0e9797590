"""Small chat templates, one per tool-call family, written for the tests: each renders an
assistant's tool calls the way that family's own template does (the real templates of Qwen3,
DeepSeek-V3.1, GLM-4.5/4.6, MiniMax-M2 and gpt-oss were checked the same way by hand; they are
not copied here). Tools are declared as each family's template declares them, roughly."""

from __future__ import annotations

_TURNS = (
    "{%- for m in messages -%}"
    "{%- if m.role == 'assistant' -%}<|assistant|>{{ m.content or '' }}{{ calls(m) }}<|end|>"
    "{%- else -%}<|{{ m.role }}|>{{ m.content }}<|end|>{%- endif -%}"
    "{%- endfor -%}{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)


def _family(calls_macro: str, declare: str = "{{ tools | tojson }}") -> str:
    return (
        "{%- macro calls(m) -%}{%- if m.tool_calls -%}" + calls_macro + "{%- endif -%}{%- endmacro -%}"
        "{%- if tools -%}<|system|>" + declare + "<|end|>{%- endif -%}" + _TURNS
    )


TEMPLATES = {
    "hermes": _family(
        "{%- for c in m.tool_calls -%}<tool_call>\n"
        '{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}\n</tool_call>'
        "{%- endfor -%}"
    ),
    "llama3": _family(
        "<|python_tag|>{%- for c in m.tool_calls -%}"
        '{"name": "{{ c.function.name }}", "parameters": {{ c.function.arguments | tojson }}}'
        "{%- endfor -%}",
        "Environment: ipython\n{{ tools | tojson }}",
    ),
    "mistral": _family("[TOOL_CALLS]{{ m.tool_calls | map(attribute='function') | list | tojson }}"),
    "deepseek": _family(
        "<｜tool▁calls▁begin｜>{%- for c in m.tool_calls -%}"
        "{{ '<｜tool▁call▁begin｜>' + c['function']['name'] + '<｜tool▁sep｜>' + "
        "c['function']['arguments'] + '<｜tool▁call▁end｜>' }}{%- endfor -%}<｜tool▁calls▁end｜>"
    ),
    "deepseek-v3": _family(
        "<｜tool▁calls▁begin｜>{%- for tool in m.tool_calls -%}"
        "{{ '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + "
        "'\\n```json\\n' + tool['function']['arguments'] + '\\n```<｜tool▁call▁end｜>' }}"
        "{%- endfor -%}<｜tool▁calls▁end｜>"
    ),
    "kimi-k2": _family(
        "<|tool_calls_section_begin|>{%- for c in m.tool_calls -%}<|tool_call_begin|>{{ c.id }}"
        "<|tool_call_argument_begin|>{{ c.function.arguments | tojson }}<|tool_call_end|>{%- endfor -%}"
        "<|tool_calls_section_end|>"
    ),
    "glm": _family(
        "{%- for c in m.tool_calls -%}\n<tool_call>{{ c.function.name }}"
        "{%- for k, v in c.function.arguments.items() %}\n<arg_key>{{ k }}</arg_key>\n"
        "<arg_value>{{ v | tojson if v is not string else v }}</arg_value>{%- endfor -%}</tool_call>"
        "{%- endfor -%}"
    ),
    "minimax-m2": _family(
        '\n<minimax:tool_call>\n{%- for c in m.tool_calls -%}<invoke name="{{ c.function.name }}">\n'
        '{%- for k, v in c.function.arguments.items() -%}<parameter name="{{ k }}">'
        "{{ v | tojson if v is not string else v }}</parameter>\n{%- endfor -%}</invoke>\n{%- endfor -%}"
        "</minimax:tool_call>"
    ),
    "harmony": _family(
        "{%- set c = m.tool_calls[0] -%}<|start|>assistant to=functions.{{ c.function.name }}"
        "<|channel|>commentary json<|message|>{{ c.function.arguments | tojson }}<|call|>"
    ),
}
