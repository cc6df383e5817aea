"""``ollamads chat``: ask a registered model once, or chat until /bye; answers stream as they come.

The answer goes to stdout; the reasoning too, dimmed, with --show-thinking. Without it, a
terminal shows a transient "thinking…" spinner on stderr while the model reasons.
"""

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console
    from rich.status import Status

    from ollamads.chat import DeepSeekClient, Event

BYE = "/bye"


def _text(text: str, style: str = "") -> object:
    from rich.text import Text

    return Text(text, style=style)
PROMPT = ">>> "

ModelArg = Annotated[str, typer.Argument(help="A registered model, e.g. deepseek-v3.1:tq1_0.")]
PromptArg = Annotated[
    str | None,
    typer.Argument(help="Ask this once and exit; without it, chat until /bye or Ctrl-D."),
]
ThinkOpt = Annotated[
    bool | None,
    typer.Option(
        "--think/--no-think",
        help="Reasoning on or off (default: the model's own: V3.1 off, R1 always on, V3 none).",
    ),
]
ShowThinkingOpt = Annotated[
    bool, typer.Option("--show-thinking", help="Print the reasoning, dimmed, before the answer.")
]
ToolsOpt = Annotated[
    Path | None,
    typer.Option(
        "--tools",
        help="A JSON file with a list of tools ({\"type\": \"function\", \"function\": {...}}); "
        "the model's calls are printed as [tool call] lines.",
    ),
]
HostOpt = Annotated[
    str | None,
    typer.Option("--host", help="Ollama server URL (default: OLLAMA_HOST or 127.0.0.1:11434)."),
]


class _Printer:
    """Turns the client's events into terminal output, one answer at a time."""

    def __init__(self, out: "Console", err: "Console", show_thinking: bool) -> None:
        self.out = out
        self.err = err
        self.show_thinking = show_thinking
        self._status: Status | None = None
        self._thought = False

    def answer(self, events: "Iterator[Event]") -> str:
        """Print one streamed answer; returns its content (for the chat history)."""
        from ollamads.chat import ContentDelta, ThinkingDelta, ToolCall

        content: list[str] = []
        self._thought = False
        try:
            for event in events:
                if isinstance(event, ThinkingDelta):
                    self._thinking(event.text)
                elif isinstance(event, ContentDelta):
                    self._content(event.text)
                    content.append(event.text)
                elif isinstance(event, ToolCall):
                    self._stop_status()
                    self.err.print(_text(f"[tool call] {event.name} {dict(event.arguments)}", style="dim"))
        finally:
            self._stop_status()
            self.out.print()
        return "".join(content)

    def _thinking(self, text: str) -> None:
        if self.show_thinking:
            self.out.print(_text(text, style="dim"), end="", soft_wrap=True)
        elif self._status is None and not self._thought and self.err.is_terminal:
            self._status = self.err.status("thinking…", spinner="dots")
            self._status.start()
        self._thought = True

    def _content(self, text: str) -> None:
        self._stop_status()
        if self._thought and self.show_thinking:
            self.out.print("\n")  # a blank line between the reasoning and the answer
        self._thought = False
        self.out.print(_text(text), end="", soft_wrap=True)

    def _stop_status(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


def _load_tools(path: Path | None) -> list[Any] | None:
    import json

    from ollamads.errors import OllamadsError

    if path is None:
        return None
    hint = 'give a JSON list of {"type": "function", "function": {"name": ..., "parameters": {...}}}'
    try:
        tools = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise OllamadsError(f"cannot read the tools file {path}: {exc.strerror}", hint) from None
    except ValueError as exc:
        raise OllamadsError(f"the tools file {path} is not JSON: {exc}", hint) from None
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise OllamadsError(f"the tools file {path} does not hold a list of tools", hint)
    return tools


def _repl(
    client: "DeepSeekClient", model: str, think: bool | None, printer: _Printer, tools: list[Any] | None
) -> None:
    interactive = sys.stdin.isatty()
    if interactive:
        printer.err.print(_text(f"{model} on {client.host} — {BYE} or Ctrl-D to quit", style="dim"))
    history: list[dict[str, Any]] = []
    while True:
        try:
            line = printer.out.input(PROMPT) if interactive else input()
        except EOFError:
            if interactive:
                printer.out.print()  # Ctrl-D leaves the cursor after the prompt
            return
        text = line.strip()
        if text == BYE:
            return
        if not text:
            continue
        turn = [*history, {"role": "user", "content": line}]
        events = client.stream(model, turn, think=think, tools=tools)
        try:
            content = printer.answer(events)
        except KeyboardInterrupt:
            # Like `ollama run`: Ctrl-C stops this answer, not the chat.
            events.close()
            printer.err.print(_text("(answer stopped)", style="dim"))
            continue
        # DeepSeek's templates drop earlier turns' reasoning: only the answer goes back.
        history = [*turn, {"role": "assistant", "content": content}]


def chat(
    model: ModelArg,
    prompt: PromptArg = None,
    think: ThinkOpt = None,
    show_thinking: ShowThinkingOpt = False,
    tools_file: ToolsOpt = None,
    host: HostOpt = None,
) -> None:
    """Chat with a registered model: one answer for PROMPT, else an interactive chat."""
    from ollamads.chat import DeepSeekClient
    from ollamads.cli._output import stderr_console, stdout_console

    tools = _load_tools(tools_file)
    printer = _Printer(stdout_console(), stderr_console(), show_thinking)
    with DeepSeekClient(host) as client:
        client.plan(model, think)  # an unknown model or an impossible --think fails before any prompt
        if prompt is not None:
            ask = [{"role": "user", "content": prompt}]
            printer.answer(client.stream(model, ask, think=think, tools=tools))
        else:
            _repl(client, model, think, printer, tools)


def register(app: typer.Typer) -> None:
    app.command("chat")(chat)
