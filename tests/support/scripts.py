"""The replies the scripted tiny models write in the tests (ollamads.tiny.write_scripted_model).

Each family's tool calls are in the syntax DeepSeek's own chat template writes for it.
"""

from __future__ import annotations

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "the city"}},
            "required": ["city"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The current time in a time zone",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "description": "an IANA time zone"}},
            "required": ["zone"],
        },
    },
}
TOOLS = [WEATHER_TOOL, TIME_TOOL]

PARIS = {"city": "Paris"}
ZONE = {"zone": "Europe/Paris"}

#: DeepSeek V3.1: NAME<｜tool▁sep｜>{JSON}, no separator between calls.
V31_ONE_CALL = (
    '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": "Paris"}'
    "<｜tool▁call▁end｜><｜tool▁calls▁end｜>"
)
V31_TWO_CALLS = (
    '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": "Paris"}'
    '<｜tool▁call▁end｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{"zone": "Europe/Paris"}'
    "<｜tool▁call▁end｜><｜tool▁calls▁end｜>"
)
#: DeepSeek V3-0324 / R1: function<｜tool▁sep｜>NAME and the arguments in a json fence.
V3_ONE_CALL = (
    "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n"
    '```json\n{"city": "Paris"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>'
)
#: R1 reasons first: its prompt ends inside "<think>\n".
R1_REASONING = "The user wants a greeting.\n</think>\n\nHello from Paris."
R1_REASONED_CALL = "I need the weather.\n</think>\n\n" + V3_ONE_CALL
PLAIN = "Hello from Paris."
AFTER_TOOL = "It is sunny in Paris."
