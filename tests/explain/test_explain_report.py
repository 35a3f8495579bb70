"""The HTML report escapes every piece of text, colours tokens by sign, and the plots are written."""

import pytest

from tandem.explain.report import BLUE, RED, plot_record, render_tokens_png, show_token, token_colour, token_row_html, write_html

ATTACK = '<script>alert("x")</script>'
RECORD = {
    "prompt": '<img src=x onerror="alert(1)">Review:',
    "completion": f" great {ATTACK}",
    "reward": {"tokens": ["Review", ":", " great", ATTACK, '" onmouseover="x', "<|endoftext|>"], "response_start": 2,
               "score": 1.0, "baseline_score": 0.2, "integrated_gradients": [0.0, 0.0, 0.7, -0.2, 0.3, 0.0],
               "occlusion": [0.0, 0.0, 0.5, -0.1, 0.2, 0.0], "completeness_gap": 0.0},
    "policy": {"tokens": [" great", ATTACK, "\n"], "policy_log_probs": [-1.0, -2.0, -0.5],
               "reference_log_probs": [-1.5, -1.0, -0.5], "log_prob_change": [0.5, -1.0, 0.0],
               "next_token_kl": [0.1, 0.3, 0.0], "sequence_log_ratio": -0.5, "sequence_kl": 0.4},
}


def test_token_colour_sign_and_strength():
    assert token_colour(0.5, 1.0) == (*BLUE, 0.5)
    assert token_colour(-2.0, 1.0) == (*RED, 1.0)
    assert token_colour(0.3, 0.0)[3] == 0.0


def test_tokens_are_escaped_and_newlines_shown():
    assert show_token(ATTACK) == "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"
    assert show_token("a\nb") == "a\u21b5\nb"
    row = token_row_html(['"><b>', "x"], [1.0, -1.0], ['title "quoted" <b>', "t"])
    assert "<b>" not in row and row.count("<span") == 2
    assert 'title="title &quot;quoted&quot; &lt;b&gt;"' in row
    with pytest.raises(ValueError):
        token_row_html(["a", "b"], [1.0], ["t", "t"])


def test_the_html_report_contains_no_live_markup_from_the_data(tmp_path):
    path = write_html(tmp_path / "report.html", [RECORD], [["tokens_1.png", "record_1.png"]], {"reward model": "<rm>"})
    text = path.read_text()
    assert "<script>" not in text and "<img src=x" not in text and 'onmouseover="x' not in text
    assert "&lt;script&gt;" in text and "&lt;rm&gt;" in text
    assert text.count("<section>") == 1 and 'src="record_1.png"' in text
    assert "raises the reward" in text and "lowers the reward" in text  # the legend


def test_pngs_are_written(tmp_path):
    for path in (plot_record(RECORD, tmp_path / "bars.png"), render_tokens_png(RECORD, tmp_path / "tokens.png")):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    reward_only = {key: value for key, value in RECORD.items() if key != "policy"}
    assert plot_record(reward_only, tmp_path / "reward_only.png").exists()
