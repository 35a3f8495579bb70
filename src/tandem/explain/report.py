"""The report a person reads: HTML with coloured tokens (hover for values) and PNG plots, one section per record.

Colours: blue where a token raises the reward (or the policy makes it more likely than the reference
does), red where it lowers it; the strength is |value| / (largest |value| in that row). Every token's
text goes through `html.escape`, so a response containing markup is shown, never executed.
"""

from __future__ import annotations

import html
from pathlib import Path

from tandem.files import atomic_write_text
from tandem.plotting import headless_pyplot

BLUE = (33, 102, 172)
RED = (178, 24, 43)


def token_colour(value: float, scale: float) -> tuple[int, int, int, float]:
    """(r, g, b, alpha): blue for positive, red for negative values, alpha = min(|value| / scale, 1)."""
    alpha = 0.0 if scale <= 0 else min(abs(value) / scale, 1.0)
    return (*(BLUE if value >= 0 else RED), round(alpha, 3))


def show_token(text: str) -> str:
    """A token made visible and safe for HTML: escaped, newlines shown as a return arrow."""
    return html.escape(text, quote=True).replace("\r", "").replace("\n", "\u21b5\n")


def token_row_html(tokens: list[str], values: list[float], titles: list[str], dim_before: int = 0) -> str:
    """<span>s for one row of tokens, coloured by value, with a hover title; tokens before `dim_before` are the prompt."""
    scale = max((abs(v) for v in values), default=0.0)
    spans = []
    for index, (token, value, title) in enumerate(zip(tokens, values, titles, strict=True)):
        r, g, b, a = token_colour(value, scale)
        css = f"background: rgba({r},{g},{b},{a})"
        kind = "tok prompt" if index < dim_before else "tok"
        spans.append(f'<span class="{kind}" style="{css}" title="{html.escape(title, quote=True)}">{show_token(token)}</span>')
    return "".join(spans)


def _value_titles(tokens: list[str], columns: dict[str, list[float]]) -> list[str]:
    return [f"{token!r}  " + "  |  ".join(f"{name} {values[i]:+.4f}" for name, values in columns.items())
            for i, token in enumerate(tokens)]


STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; max-width: 1100px; margin: 2em auto; color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { border-top: 1px solid #ddd; padding-top: 1em; }
.tokens { font-family: ui-monospace, 'DejaVu Sans Mono', monospace; white-space: pre-wrap; line-height: 2.1; font-size: 15px; }
.tok { padding: 3px 0; border-radius: 3px; }
.prompt { text-decoration: underline dotted #888; }
.row { display: grid; grid-template-columns: 210px 1fr; gap: 0.8em; margin: 0.6em 0; align-items: start; }
.label { font-size: 13px; color: #555; padding-top: 0.35em; } .label b { color: #222; }
.legend { display: flex; align-items: center; gap: 0.6em; font-size: 14px; margin: 1em 0; }
.bar { width: 260px; height: 16px; border: 1px solid #ccc;
       background: linear-gradient(to right, rgba(178,24,43,1), rgba(178,24,43,0) 50%, rgba(33,102,172,0) 50%, rgba(33,102,172,1)); }
table { border-collapse: collapse; font-size: 14px; } td, th { padding: 3px 10px; border-bottom: 1px solid #eee; text-align: left; }
img { max-width: 100%; margin-top: 0.5em; } .note { color: #555; font-size: 14px; }
"""


def _row(label: str, detail: str, body: str) -> str:
    return f'<div class="row"><div class="label"><b>{html.escape(label)}</b><br>{detail}</div><div class="tokens">{body}</div></div>'


def record_html(index: int, record: dict, images: list[str]) -> str:
    """One section: the prompt, score table, coloured rows for each explanation present, and the plots."""
    parts = [f"<section><h2>{index + 1}. {html.escape(record['prompt'][:120])}</h2>"]
    reward = record.get("reward")
    if reward is not None:
        tokens, start = reward["tokens"], reward["response_start"]
        columns = {"integrated gradients": reward["integrated_gradients"], "occlusion": reward["occlusion"]}
        titles = _value_titles(tokens, columns)
        parts.append(
            "<table><tr><th>reward score F(x)</th><th>baseline F(x')</th><th>sum of IG</th><th>completeness gap</th>"
            "<th>sum of occlusion</th></tr>"
            f"<tr><td>{reward['score']:+.4f}</td><td>{reward['baseline_score']:+.4f}</td>"
            f"<td>{sum(reward['integrated_gradients']):+.4f}</td><td>{reward['completeness_gap']:+.2e}</td>"
            f"<td>{sum(reward['occlusion']):+.4f}</td></tr></table>"
        )
        for name, values in columns.items():
            scale = max((abs(v) for v in values), default=0.0)
            parts.append(_row(name, f"reward model; scale &plusmn;{scale:.3g}", token_row_html(tokens, values, titles, start)))
    shift = record.get("policy")
    if shift is not None:
        columns = {"log-prob change": shift["log_prob_change"], "next-token KL": shift["next_token_kl"],
                   "log pi": shift["policy_log_probs"], "log pi_ref": shift["reference_log_probs"]}
        titles = _value_titles(shift["tokens"], columns)
        parts.append(f'<p class="note">policy vs reference on this response: sequence log-ratio '
                     f'{shift["sequence_log_ratio"]:+.4f}, sum of next-token KL {shift["sequence_kl"]:.4f}</p>')
        for name in ("log-prob change", "next-token KL"):
            values = columns[name]
            scale = max((abs(v) for v in values), default=0.0)
            detail = "log pi - log pi_ref" if name == "log-prob change" else "KL(pi || pi_ref) of the next-token distribution"
            parts.append(_row(name, f"{detail}; scale {scale:.3g}", token_row_html(shift["tokens"], values, titles)))
    parts += [f'<img src="{html.escape(image, quote=True)}" alt="plots for record {index + 1}">' for image in images]
    parts.append("</section>")
    return "\n".join(parts)


def write_html(path: Path, records: list[dict], images: list[list[str]], header: dict[str, str]) -> Path:
    """The whole report: a header naming the models, the colour legend, and one section per record."""
    facts = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in header.items())
    legend = ('<div class="legend"><span>lowers the reward / less likely under the policy</span><div class="bar"></div>'
              "<span>raises the reward / more likely under the policy</span></div>"
              '<p class="note">Each row is scaled to its own largest |value|; hover a token for its values. '
              "Underlined tokens are the prompt. Integrated gradients sum to F(x) - F(baseline) (the completeness gap "
              "says how closely); occlusion is the score lost when a token is replaced by the baseline.</p>")
    body = "\n".join(record_html(i, record, images[i]) for i, record in enumerate(records))
    document = (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>tandem explain</title>'
                f"<style>{STYLE}</style></head><body>\n<h1>tandem explain</h1><table>{facts}</table>\n{legend}\n{body}\n</body></html>\n")
    atomic_write_text(path, document)
    return path


# ----- PNGs ----------------------------------------------------------------------------------------




def _labels(tokens: list[str]) -> list[str]:
    return [token.replace("\n", "\u21b5") or " " for token in tokens]


def plot_record(record: dict, path: Path) -> Path:
    """Bar plots: IG and occlusion per token (reward), log-prob change and next-token KL per token (policy)."""
    plt = headless_pyplot()
    panels = [key for key in ("reward", "policy") if record.get(key) is not None]
    widths = [len(record[key]["tokens"]) for key in panels]
    figure, axes = plt.subplots(len(panels), 1, figsize=(max(7, 0.28 * max(widths)), 3.2 * len(panels)), squeeze=False)
    for axis, key in zip(axes[:, 0], panels):
        part = record[key]
        first, second = (("integrated_gradients", "occlusion") if key == "reward" else ("log_prob_change", "next_token_kl"))
        positions = range(len(part["tokens"]))
        axis.bar([p - 0.2 for p in positions], part[first], width=0.4, label=first.replace("_", " "), color="#4c72b0")
        axis.bar([p + 0.2 for p in positions], part[second], width=0.4, label=second.replace("_", " "), color="#dd8452")
        if key == "reward":
            axis.axvline(part["response_start"] - 0.5, color="grey", linestyle=":", linewidth=1)
        axis.axhline(0, color="black", linewidth=0.6)
        axis.set_xticks(list(positions), _labels(part["tokens"]), rotation=90, fontsize=8)
        axis.set_ylabel("reward attribution" if key == "reward" else "policy vs reference")
        axis.legend(fontsize=8)
        axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def render_tokens_png(record: dict, path: Path, width_chars: int = 92) -> Path:
    """A picture of the coloured token rows as the HTML shows them (monospace, wrapped), for a quick look."""
    plt = headless_pyplot()
    rows = []  # (label, tokens, values, how many leading tokens are the prompt)
    if record.get("reward") is not None:
        reward = record["reward"]
        rows += [("integrated gradients", reward["tokens"], reward["integrated_gradients"], reward["response_start"]),
                 ("occlusion", reward["tokens"], reward["occlusion"], reward["response_start"])]
    if record.get("policy") is not None:
        rows += [("log-prob change", record["policy"]["tokens"], record["policy"]["log_prob_change"], 0),
                 ("next-token KL", record["policy"]["tokens"], record["policy"]["next_token_kl"], 0)]
    lines: list[tuple[str, list[tuple[int, str, tuple, bool]]]] = []  # (label, [(column, text, rgba, in prompt)])
    for label, tokens, values, prompt_length in rows:
        scale = max((abs(v) for v in values), default=0.0)
        column, current = 0, []
        lines.append((f"{label} (scale {scale:.3g})", []))
        for index, (token, value) in enumerate(zip(_labels(tokens), values)):
            if column + len(token) > width_chars and current:
                lines.append(("", current))
                column, current = 0, []
            r, g, b, a = token_colour(value, scale)
            current.append((column, token, (r / 255, g / 255, b / 255, a), index < prompt_length))
            column += len(token)
        lines.append(("", current))
    char, height = 0.602 * 10 / 72, 0.34  # inches per character (DejaVu Sans Mono advance at 10 pt) and per line
    figure = plt.figure(figsize=((width_chars + 4) * char, height * (len(lines) + 1)))
    axis = figure.add_axes((0, 0, 1, 1))
    axis.set_xlim(-2, width_chars + 2)  # one x unit is one character
    axis.set_ylim(len(lines) + 0.5, -0.5)
    axis.axis("off")
    for y, (label, tokens) in enumerate(lines):
        if label:
            axis.text(0, y, label, fontsize=9, color="#444", weight="bold", va="center")
        for x, token, colour, in_prompt in tokens:
            axis.text(x, y, token, fontsize=10, family="monospace", va="center", color="#888" if in_prompt else "black",
                      bbox={"facecolor": colour, "edgecolor": "none", "pad": 1.5})
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
