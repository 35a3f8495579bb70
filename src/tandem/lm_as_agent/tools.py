"""Tools for language agents: a calculator, sandboxed Python, the tool-call format, and `ToolEnv`.

A `Tool` has a name, a one-line description, JSON-schema parameters and `__call__(**arguments) -> str`;
failures come back as text (``error: ...``), never as an exception, so a bad call costs the model a turn,
not the run. Tools by name: ``calculator`` (exact arithmetic parsed with `ast`, no `eval`) and ``python``
(code run by `tandem.sandbox`).

The call format. When the tokenizer's chat template renders ``tools=`` (Qwen2.5, Llama 3.1, Hermes, ...),
`ToolEnv.use_chat_template(tokenizer)` switches to it: the rollout passes ``tools=env.chat_tools`` to
``apply_chat_template``. Otherwise the system message describes the fallback, the Hermes / Qwen format
most instruct models know::

    <tool_call>{"name": "calculator", "arguments": {"expression": "2+3"}}</tool_call>

`parse_tool_calls` reads both (templates ask for the same tags; a reply that is only such a JSON object,
Llama style, with ``arguments`` or ``parameters``, counts too).

`ToolEnv(env, tools, max_tool_calls)` wraps any `TextEnv`: a reply with a tool call runs it and returns its
result as a ``role="tool"`` observation without stepping the inner env; a reply without one (or once the
calls are used up) goes to the inner env. The env kind ``tools`` wraps a single-turn task::

    tools:arithmetic:digits=3:tools=calculator,python:max_calls=4
    tools:rg:dataset=basic_arithmetic:tools=python        (a reasoning-gym dataset; the task's own options follow)
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tandem.lm_as_agent.env import EnvSuite, StepResult, TaskEnv, TextEnv, register_env_kind
from tandem.sandbox import SandboxLimits, choose_isolation, run_python


class ToolError(Exception):
    """A tool's failure, told to the model as ``error: <message>``."""


@dataclass
class Tool:
    """A function the model may call. `parameters` is a JSON schema of an object (the call's arguments)."""

    name: str
    description: str
    parameters: dict[str, Any]
    function: Callable[..., str]

    def run(self, arguments: Any) -> tuple[str, bool]:
        """(result text, whether it failed): bad arguments and every exception become text."""
        if not isinstance(arguments, dict):
            return f"error: {self.name} takes a JSON object of arguments, not {type(arguments).__name__}", True
        properties = self.parameters.get("properties", {})
        missing = [key for key in self.parameters.get("required", []) if key not in arguments]
        unknown = [key for key in arguments if key not in properties]
        if missing or unknown:
            problem = "; ".join(filter(None, [missing and f"missing {', '.join(missing)}", unknown and f"unknown {', '.join(unknown)}"]))
            return f"error: {self.name}: {problem} (arguments: {', '.join(properties)})", True
        try:
            return str(self.function(**arguments)), False
        except ToolError as error:
            return f"error: {error}", True
        except Exception as error:  # noqa: BLE001 - a tool's bug is the model's observation, not a crash
            return f"error: {self.name} failed: {type(error).__name__}: {error}", True

    def __call__(self, **arguments: Any) -> str:
        return self.run(arguments)[0]

    def schema(self) -> dict[str, Any]:
        """The tool as chat templates and OpenAI-style APIs take it."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}


# ---- the calculator -----------------------------------------------------------------------------------------
MAX_RESULT_BITS = 3400  # about 1000 decimal digits: the largest integer the calculator will build
MAX_EXPRESSION_CHARS = 1000
MAX_NESTING = 950  # operators and parentheses inside one another (not the interpreter's recursion limit, which varies)

_OPERATORS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}


def _too_large(operation: type, left: int | float, right: int | float) -> bool:
    """Would `left op right` exceed MAX_RESULT_BITS (checked before computing, so 9**9**9 never runs)?"""
    if not (isinstance(left, int) and isinstance(right, int)):
        return False  # floats overflow to an error or inf, checked after
    if operation is ast.Mult:
        return left.bit_length() + right.bit_length() > MAX_RESULT_BITS
    if operation is ast.Pow and right > 0 and abs(left) > 1:
        return right * math.log2(abs(left)) > MAX_RESULT_BITS
    return False


def _evaluate(node: ast.AST, depth: int = 0) -> int | float:
    if depth > MAX_NESTING:
        raise RecursionError
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, depth + 1)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _evaluate(node.operand, depth + 1)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _evaluate(node.left, depth + 1), _evaluate(node.right, depth + 1)
        if _too_large(type(node.op), left, right):
            raise ToolError("the result is too large")
        if isinstance(node.op, ast.Pow) and isinstance(right, int) and abs(right) > 10_000 and abs(left) not in (0, 1):
            raise ToolError("the exponent is too large")
        try:
            value = _OPERATORS[type(node.op)](left, right)
        except ZeroDivisionError:
            raise ToolError("division by zero") from None
        except OverflowError:
            raise ToolError("the result is too large") from None
        if isinstance(value, complex):
            raise ToolError("the result is not a real number")
        if isinstance(value, float) and not math.isfinite(value):
            raise ToolError("the result is too large")
        if isinstance(value, int) and value.bit_length() > MAX_RESULT_BITS:
            raise ToolError("the result is too large")
        return value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitXor):
        raise ToolError("'^' is not a power here; write ** (2**10)")
    raise ToolError(f"only numbers, + - * / // % ** and parentheses are allowed, not {ast.unparse(node)!r}")


def evaluate_arithmetic(expression: str) -> int | float:
    """The value of an arithmetic expression, exactly as Python computes it, without `eval`.

    Numbers (int, float), + - * / // % **, unary minus and parentheses; names, calls, attributes and
    anything else raise `ToolError`, as do results over about 1000 digits (checked before computing).
    """
    text = expression.strip().rstrip("=").strip()
    if not text:
        raise ToolError("empty expression")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        return _evaluate(ast.parse(text, mode="eval"))
    except SyntaxError as error:
        raise ToolError(f"not an arithmetic expression: {error.msg}") from None
    except (RecursionError, MemoryError):  # the parser's or ours
        raise ToolError("the expression is nested too deeply") from None


def _calculate(expression: str) -> str:
    if not isinstance(expression, str):
        raise ToolError("expression must be a string")
    return repr(evaluate_arithmetic(expression))


def calculator_tool() -> Tool:
    return Tool("calculator", "Evaluate an arithmetic expression: numbers, + - * / // % ** and parentheses.",
                {"type": "object", "properties": {"expression": {"type": "string", "description": "e.g. (37 + 48) * 3"}},
                 "required": ["expression"]}, _calculate)


# ---- Python ------------------------------------------------------------------------------------------------
def python_tool(limits: SandboxLimits | None = None) -> Tool:
    """Run code in the sandbox; the result is what it printed, or the error (traceback, limit hit) as text.

    Raises SandboxUnavailable here, not at the model's first call, where the sandbox cannot be isolated."""
    limits = limits or SandboxLimits()
    choose_isolation(limits.isolation)

    def run(code: str) -> str:
        if not isinstance(code, str):
            raise ToolError("code must be a string")
        result = run_python(code, limits)
        if not result.ok:
            details = "\n".join(filter(None, [result.stdout.rstrip(), result.stderr.rstrip()]))
            raise ToolError(f"the code stopped ({result.status}):\n{details}".rstrip())
        return result.stdout.rstrip("\n") or "(no output: print the values you need)"

    return Tool("python", f"Run Python code (standard library only, {limits.seconds:g} s, no network or files) "
                          "and return what it prints; print the result.",
                {"type": "object", "properties": {"code": {"type": "string", "description": "a Python program"}},
                 "required": ["code"]}, run)


TOOL_FACTORIES: dict[str, Callable[..., Tool]] = {
    "calculator": lambda limits: calculator_tool(),
    "python": lambda limits: python_tool(limits),
}


def make_tools(names: str | Sequence[str], limits: SandboxLimits | None = None) -> list[Tool]:
    """Tools by name: ``"calculator,python"`` or a list of names."""
    wanted = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
    unknown = [n for n in wanted if n not in TOOL_FACTORIES]
    if unknown or not wanted:
        raise ValueError(f"unknown tools {unknown or wanted}; choose from {', '.join(TOOL_FACTORIES)}")
    return [TOOL_FACTORIES[name](limits) for name in dict.fromkeys(wanted)]


# ---- the call format --------------------------------------------------------------------------------------
@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


_TAGGED = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.S)  # an unclosed last call: generation stopped at the tag
_FORMAT = '<tool_call>{"name": "TOOL", "arguments": {...}}</tool_call>'


def _read_call(body: str, names: Sequence[str] | None) -> ToolCall | str:
    body = body.strip()
    start = body.find("{")
    if start < 0:
        return f"error: a tool call holds a JSON object: {_FORMAT}"
    try:
        value, _ = json.JSONDecoder().raw_decode(body[start:])
    except json.JSONDecodeError as error:
        return f"error: the tool call is not valid JSON ({error.msg} at character {error.pos}); write {_FORMAT}"
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return f"error: a tool call needs a \"name\"; write {_FORMAT}"
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):  # OpenAI-style: the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return "error: the tool call's arguments are not a JSON object"
    if not isinstance(arguments, dict):
        return "error: the tool call's arguments are not a JSON object"
    if names is not None and value["name"] not in names:
        return f"error: there is no tool {value['name']!r}; the tools are {', '.join(names)}"
    return ToolCall(value["name"], arguments)


def parse_tool_calls(text: str, names: Sequence[str] | None = None) -> list[ToolCall | str]:
    """Every tool call in a reply, in order: a `ToolCall`, or an error text for a malformed one or (with
    `names`) an unknown tool. ``<tool_call>...</tool_call>`` blocks, else a reply that is only a JSON object
    with a "name" and "arguments"/"parameters". Never raises."""
    bodies = _TAGGED.findall(text)
    if not bodies:
        stripped = text.strip()
        if not (stripped.startswith("{") and stripped.endswith("}") and '"name"' in stripped):
            return []
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError:
            return []  # braces in an answer are not a call
        if not (isinstance(value, dict) and ("arguments" in value or "parameters" in value)):
            return []
        bodies = [stripped]
    return [_read_call(body, names) for body in bodies]


def parse_tool_call(text: str, names: Sequence[str] | None = None) -> ToolCall | str | None:
    """The first tool call of a reply (a `ToolCall` or an error text), or None when it has none."""
    calls = parse_tool_calls(text, names)
    return calls[0] if calls else None


def fallback_tool_instructions(tools: Sequence[Tool], max_tool_calls: int) -> str:
    """The system-message paragraph that teaches the ``<tool_call>`` format when the template cannot."""
    lines = [f"- {tool.name}: {tool.description} Arguments: {json.dumps(tool.parameters.get('properties', {}))}"
             for tool in tools]
    return ("You can use tools. To call one, reply with only\n"
            '<tool_call>{"name": "TOOL_NAME", "arguments": {...}}</tool_call>\n'
            f"and the result comes back in the next message. Use at most {max_tool_calls} tool calls; "
            "then reply with your final answer and no tool call. The tools:\n" + "\n".join(lines))


def template_renders_tools(tokenizer, tools: Sequence[Tool]) -> bool:
    """Does the tokenizer's chat template show the tools when given ``tools=`` (so the model has been
    trained on its format)? Templates without tool support ignore the argument."""
    if not getattr(tokenizer, "chat_template", None) or not tools:
        return False
    messages = [{"role": "user", "content": "hello"}]
    try:
        plain = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        with_tools = tokenizer.apply_chat_template(messages, tools=[t.schema() for t in tools], tokenize=False,
                                                   add_generation_prompt=True)
    except Exception:  # noqa: BLE001 - a template that fails on tools does not support them
        return False
    return with_tools != plain and tools[0].name in with_tools


# ---- the environment wrapper -----------------------------------------------------------------------------
class ToolEnv(TextEnv):
    """`env` with tools: tool calls are answered here (reward 0, ``role="tool"``), everything else goes to `env`.

    At most `max_tool_calls` calls an episode; the result of the last one says so, and a reply that calls a
    tool after that is passed to `env` as the answer (so an episode lasts at most max_tool_calls + 1 turns).
    """

    def __init__(self, env: TextEnv, tools: Sequence[Tool], max_tool_calls: int = 4):
        if not tools:
            raise ValueError("ToolEnv needs at least one tool")
        if max_tool_calls < 1:
            raise ValueError(f"max_tool_calls must be >= 1, got {max_tool_calls}")
        self.env, self.tools, self.max_tool_calls = env, {tool.name: tool for tool in tools}, max_tool_calls
        self.chat_tools: list[dict] | None = None  # set by use_chat_template: pass as apply_chat_template(tools=...)
        self.instructions = f"{env.instructions}\n\n{fallback_tool_instructions(tools, max_tool_calls)}".strip()
        self.calls = 0

    def use_chat_template(self, tokenizer) -> bool:
        """Describe the tools through the template when it renders them; True if it does."""
        tools = list(self.tools.values())
        if not template_renders_tools(tokenizer, tools):
            return False
        self.chat_tools = [tool.schema() for tool in tools]
        self.instructions = (f"{self.env.instructions}\n\nYou may call the tools (at most {self.max_tool_calls} "
                             "calls), then reply with your final answer and no tool call.").strip()
        return True

    def reset(self, seed: int | None = None) -> str:
        self.calls = 0
        return self.env.reset(seed)

    def step(self, action: str) -> StepResult:
        calls = parse_tool_calls(action, list(self.tools))
        left = self.max_tool_calls - self.calls
        if not calls or left <= 0:
            return self.env.step(action)
        results, failed = [], False
        for call in calls[:left]:
            text, error = (call, True) if isinstance(call, str) else self.tools[call.name].run(call.arguments)
            results.append(text)
            failed |= error
        self.calls += len(results)
        names = [call.name for call in calls[:left] if isinstance(call, ToolCall)]
        observation = (results[0] if len(results) == 1 else
                       "\n".join(f"[{i + 1}] {text}" for i, text in enumerate(results)))
        if len(calls) > left:
            observation += f"\n(only {left} more tool calls were allowed; the others were not run)"
        if self.calls >= self.max_tool_calls:
            observation += "\n(no tool calls left: reply with your final answer)"
        return StepResult(observation, 0.0, False, False,
                          {"role": "tool", "tool": ",".join(names), "tool_error": failed, "tool_calls": self.calls,
                           "invalid_action": False})

    def close(self) -> None:
        self.env.close()


@register_env_kind("tools")
def _tools_kind(spec: str, task: str | None, invalid: str, invalid_penalty: float, tools: str = "calculator",
                max_calls: int = 4, tool_seconds: float = 5.0, max_turns: int | None = None,
                isolation: str | None = None, **task_options: Any) -> EnvSuite:
    """``tools:TASK[:task options]:tools=a,b:max_calls=N:tool_seconds=S[:isolation=strict|fallback|off]``: a
    single-turn task with tools (`isolation`: the python tool's sandbox, see `tandem.sandbox`)."""
    from tandem.tasks import get_task

    built = get_task(task or "arithmetic", **task_options)
    toolset = make_tools(str(tools), SandboxLimits(seconds=float(tool_seconds), isolation=isolation))
    return EnvSuite(spec, lambda split: ToolEnv(TaskEnv(built, split), toolset, int(max_calls)),
                    max_turns or int(max_calls) + 1)
