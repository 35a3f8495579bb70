"""Tools: the calculator against Python, the tool-call format, and episodes of `ToolEnv`."""

import copy
import json
import random
import re

import pytest

from tandem.lm_as_agent.env import EnvSuite, TaskEnv, make_env_suite
from tandem.lm_as_agent.tools import (
    Tool,
    ToolCall,
    ToolEnv,
    ToolError,
    calculator_tool,
    evaluate_arithmetic,
    fallback_tool_instructions,
    make_tools,
    parse_tool_call,
    parse_tool_calls,
    python_tool,
    template_renders_tools,
)
from tandem.sandbox import SandboxLimits
from tandem.tasks import get_task
from tandem.tasks.arithmetic import answer_from_prompt


def call(name, **arguments):
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


# ---- the calculator ----------------------------------------------------------------------------------------
def random_expression(rng: random.Random, depth: int) -> str:
    if depth == 0 or rng.random() < 0.25:
        return str(rng.randint(0, 60)) if rng.random() < 0.8 else str(round(rng.uniform(0, 20), rng.randint(0, 3)))
    if rng.random() < 0.15:
        return f"-{random_expression(rng, depth - 1)}"
    operation = rng.choice(["+", "-", "*", "/", "//", "%", "**"])
    if operation == "**":  # small powers: Python's own answer must stay computable
        return f"({random_expression(rng, 0)}) ** {rng.randint(0, 4)}"
    return f"({random_expression(rng, depth - 1)} {operation} {random_expression(rng, depth - 1)})"


def test_the_calculator_agrees_with_python_on_random_expressions():
    rng = random.Random(0)
    tool, checked = calculator_tool(), 0
    for _ in range(2000):
        expression = random_expression(rng, 4)
        try:
            expected = repr(eval(expression))  # noqa: S307 - the reference, on expressions the test wrote
        except ZeroDivisionError:
            assert tool(expression=expression) == "error: division by zero", expression
            continue
        except OverflowError:
            assert tool(expression=expression).startswith("error:"), expression
            continue
        if "complex" in expected or "j" in expected:
            assert tool(expression=expression).startswith("error:"), expression
            continue
        assert tool(expression=expression) == expected, expression
        checked += 1
    assert checked > 1500


@pytest.mark.parametrize("expression, value", [("2+3", 5), ("-3**2", -9), ("(-3)**2", 9), ("7/2", 3.5), ("-7//2", -4),
                                               ("-7 % 3", 2), ("2**-1", 0.5), ("1_000 * 3", 3000), (" 12*3 = ", 36),
                                               ("+-+5", -5), ("1e3 + 0.5", 1000.5), ("1**(10**100)", 1)])
def test_the_calculator_on_known_values(expression, value):
    assert evaluate_arithmetic(expression) == value


@pytest.mark.parametrize("expression, message", [
    ("__import__('os').system('ls')", "only numbers"), ("().__class__", "only numbers"), ("x + 1", "only numbers"),
    ("abs(-1)", "only numbers"), ("[1, 2]", "only numbers"), ("'a' * 3", "only numbers"), ("True + 1", "only numbers"),
    ("1 if 1 else 2", "only numbers"), ("lambda: 1", "only numbers"), ("2 ^ 3", "write **"), ("3 < 4", "only numbers"),
    ("9**9**9", "too large"), ("2**100000", "too large"), ("10**999 * 10**999", "too large"), ("1e308 * 10", "too large"),
    ("10.0 ** 400", "too large"), ("(-8) ** 0.5", "not a real number"), ("1 / 0", "division by zero"), ("5 % 0", "division by zero"),
    ("", "empty"), ("2 +", "not an arithmetic expression"), ("1+" * 600 + "1", "longer than"), ("-" * 998 + "1", "nested too deeply")])
def test_the_calculator_rejects_unsafe_or_unbounded_input_as_text(expression, message):
    with pytest.raises(ToolError, match=re.escape(message)):
        evaluate_arithmetic(expression)
    assert calculator_tool()(expression=expression).startswith("error:")


def test_deep_but_reasonable_nesting_is_fine():
    assert evaluate_arithmetic("-" * 900 + "1") == 1 and evaluate_arithmetic("(" * 200 + "1" + ")" * 200) == 1


def test_the_nesting_bound_holds_whatever_the_recursion_limit():
    """torch's compiler raises the interpreter's recursion limit to 2000: the calculator's bound is its own."""
    import sys

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(5000)
    try:
        with pytest.raises(ToolError, match="nested too deeply"):
            evaluate_arithmetic("-" * 998 + "1")
        assert evaluate_arithmetic("-" * 900 + "1") == 1
    finally:
        sys.setrecursionlimit(limit)


# ---- tools and their arguments ---------------------------------------------------------------------------------
def test_bad_arguments_and_tool_exceptions_come_back_as_text():
    calculator = calculator_tool()
    assert calculator.run({}) == ("error: calculator: missing expression (arguments: expression)", True)
    assert calculator.run({"expression": "1", "x": 2})[0].startswith("error: calculator: unknown x")
    assert calculator.run(["1+1"])[1] and calculator(expression=5).startswith("error:")

    def broken(text: str) -> str:
        raise KeyError(text)

    tool = Tool("broken", "always fails", {"type": "object", "properties": {"text": {"type": "string"}}}, broken)
    assert tool.run({"text": "a"}) == ("error: broken failed: KeyError: 'a'", True)
    assert tool.schema()["function"]["name"] == "broken"


def test_the_python_tool_returns_output_or_the_error_as_text():
    python = python_tool(SandboxLimits(seconds=1))
    assert python(code="print(sum(range(101)))") == "5050"
    assert python(code="x = 1") == "(no output: print the values you need)"
    error = python(code="print('partial')\nraise ValueError('bad value')")
    assert error.startswith("error: the code stopped (error)") and "partial" in error and "ValueError: bad value" in error
    assert python(code="while True: pass").startswith("error: the code stopped (timeout)")
    assert python(code="import socket; socket.socket()").startswith("error: the code stopped (network)")


def test_make_tools_by_name():
    assert [tool.name for tool in make_tools("calculator, python")] == ["calculator", "python"]
    with pytest.raises(ValueError, match="unknown tools"):
        make_tools("calculator,search")


# ---- the call format -------------------------------------------------------------------------------------------
def test_parse_a_good_call_and_text_without_one():
    assert parse_tool_call("Let me compute. " + call("calculator", expression="2+3")) == ToolCall("calculator", {"expression": "2+3"})
    assert parse_tool_call("The answer is 5.\n#### 5") is None
    assert parse_tool_call("{not a call} and {\"name\": 3}") is None
    assert parse_tool_call('<tool_call>\n{"name": "calculator", "arguments": {"expression": "1"}}\n') == ToolCall("calculator", {"expression": "1"})


def test_parse_other_spellings_of_a_call():
    assert parse_tool_call('{"name": "calculator", "parameters": {"expression": "4"}}') == ToolCall("calculator", {"expression": "4"})
    stringified = '<tool_call>{"name": "calculator", "arguments": "{\\"expression\\": \\"6\\"}"}</tool_call>'
    assert parse_tool_call(stringified) == ToolCall("calculator", {"expression": "6"})
    assert parse_tool_call('<tool_call>{"name": "calculator", "arguments": {"expression": "1"}} trailing</tool_call>').name == "calculator"


@pytest.mark.parametrize("text, message", [
    ("<tool_call>{'name': 'calculator'}</tool_call>", "not valid JSON"),
    ('<tool_call>{"name": "calculator", "arguments": {"expression": "1"</tool_call>', "not valid JSON"),
    ("<tool_call>calculator 2+3</tool_call>", "holds a JSON object"),
    ('<tool_call>{"arguments": {}}</tool_call>', 'needs a "name"'),
    ('<tool_call>{"name": "calculator", "arguments": [1]}</tool_call>', "not a JSON object"),
    ('<tool_call>{"name": "search", "arguments": {}}</tool_call>', "no tool 'search'; the tools are calculator, python"),
])
def test_malformed_or_unknown_calls_are_error_texts_never_exceptions(text, message):
    result = parse_tool_call(text, ["calculator", "python"])
    assert isinstance(result, str) and result.startswith("error:") and message in result


def test_several_calls_are_read_in_order():
    text = call("calculator", expression="1+1") + " then " + "<tool_call>{oops</tool_call>" + call("python", code="print(1)")
    calls = parse_tool_calls(text, ["calculator", "python"])
    assert calls[0] == ToolCall("calculator", {"expression": "1+1"}) and calls[0].name == "calculator"
    assert isinstance(calls[1], str) and calls[2] == ToolCall("python", {"code": "print(1)"})


def test_the_fallback_instructions_describe_the_format_and_every_tool():
    text = fallback_tool_instructions(make_tools("calculator,python"), 3)
    assert "<tool_call>" in text and "at most 3 tool calls" in text and "- calculator:" in text and "- python:" in text


TOOL_TEMPLATE = ("{% if tools %}Tools: {% for tool in tools %}{{ tool.function.name }} {% endfor %}\n{% endif %}"
                 "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}")


def test_the_chat_template_is_used_only_when_it_renders_tools(sentiment_tokenizer):
    tools = make_tools("calculator")
    assert not template_renders_tools(sentiment_tokenizer, tools)  # tandem's ChatML template has no tools
    with_tools = copy.deepcopy(sentiment_tokenizer)
    with_tools.chat_template = TOOL_TEMPLATE
    assert template_renders_tools(with_tools, tools)

    env = ToolEnv(TaskEnv(get_task("arithmetic")), tools)
    assert not env.use_chat_template(sentiment_tokenizer) and env.chat_tools is None and "<tool_call>" in env.instructions
    assert env.use_chat_template(with_tools) and env.chat_tools == [tools[0].schema()]
    assert "<tool_call>" not in env.instructions and "at most 4 calls" in env.instructions


# ---- ToolEnv -------------------------------------------------------------------------------------------------------
def arithmetic_env(max_tool_calls=4, tools="calculator,python"):
    return ToolEnv(TaskEnv(get_task("arithmetic")), make_tools(tools, SandboxLimits(seconds=2)), max_tool_calls)


def test_a_tool_call_then_the_answer_earns_the_task_reward():
    env = arithmetic_env()
    prompt = env.reset(seed=3)
    expression = prompt.split("What is ")[1].split("?")[0]
    result = env.step("I will use the calculator. " + call("calculator", expression=expression))
    assert result.observation == str(answer_from_prompt(prompt))
    assert (result.reward, result.terminated) == (0.0, False)
    assert result.info == {"role": "tool", "tool": "calculator", "tool_error": False, "tool_calls": 1, "invalid_action": False}
    final = env.step(f"#### {result.observation}")
    assert (final.reward, final.terminated, final.info["success"]) == (1.0, True, True)
    assert "role" not in final.info


def test_a_wrong_answer_after_the_tool_earns_nothing_and_no_tool_answers_directly():
    env = arithmetic_env()
    prompt = env.reset(seed=4)
    env.step(call("python", code="print(1)"))
    assert env.step(f"#### {answer_from_prompt(prompt) + 1}").reward == 0.0
    prompt = env.reset(seed=5)
    assert env.calls == 0 and env.step(f"#### {answer_from_prompt(prompt)}").reward == 1.0


def test_tool_failures_come_back_as_text_and_the_episode_goes_on():
    env = arithmetic_env()
    env.reset(seed=0)
    for text, expected in [(call("calculator", expression="2 ** 100000"), "error: the result is too large"),
                           (call("python", code="import os\nos.system('ls')"), "error: the code stopped (killed)"),
                           ("<tool_call>{broken json</tool_call>", "error: the tool call is not valid JSON")]:
        result = env.step(text)
        assert result.observation.startswith(expected) and result.info["tool_error"] and not result.terminated


def test_the_tool_call_budget_is_announced_and_then_enforced():
    env = arithmetic_env(max_tool_calls=2)
    prompt = env.reset(seed=1)
    assert "no tool calls left" not in env.step(call("calculator", expression="1+1")).observation
    last = env.step(call("calculator", expression="2+2"))
    assert last.observation.startswith("4") and "no tool calls left" in last.observation and env.calls == 2
    after = env.step(call("calculator", expression="3+3") + f" #### {answer_from_prompt(prompt)}")
    assert after.terminated and "role" not in after.info and after.reward == 1.0  # given to the task as the answer


def test_several_calls_in_one_reply_run_in_order_within_the_budget():
    env = arithmetic_env(max_tool_calls=2)
    env.reset(seed=2)
    result = env.step(call("calculator", expression="2*21") + call("python", code="print(6*7)") + call("calculator", expression="1"))
    assert result.observation.startswith("[1] 42\n[2] 42\n(only 2 more tool calls were allowed")
    assert result.info["tool"] == "calculator,python" and result.info["tool_calls"] == 2


def test_the_tools_env_kind():
    suite = make_env_suite("tools:arithmetic:digits=3:tools=calculator,python:max_calls=2")
    assert isinstance(suite, EnvSuite) and suite.max_turns == 3
    train, held_out = suite.make("train"), suite.make("eval")
    assert isinstance(train, ToolEnv) and set(train.tools) == {"calculator", "python"} and train.max_tool_calls == 2
    first = train.reset(seed=0)
    assert "What is" in first and first != held_out.reset(seed=0)
    assert len(first.split("What is ")[1].split(" ")[0]) == 3  # the task's own option reached it
    assert make_env_suite("tools:arithmetic").make().tools.keys() == {"calculator"}
    with pytest.raises(ValueError, match="unknown tools"):
        make_env_suite("tools:arithmetic:tools=search")


def test_the_tools_env_kind_with_a_reasoning_gym_task():
    pytest.importorskip("reasoning_gym")
    env = make_env_suite("tools:rg:dataset=basic_arithmetic:size=20:eval_size=5:tools=calculator").make("train")
    prompt = env.reset(seed=0)
    assert prompt and env.step(call("calculator", expression="1+2")).observation == "3"
    assert env.step("<answer>no idea</answer>").terminated
