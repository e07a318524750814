"""Renderers for ``Cells``: terminal (ANSI, ≤ 120 columns), HTML and LaTeX (pandas Styler), Markdown, CSV.

Every renderer shows the same thing: the value to two decimals, ``—`` for a missing cell, ``†`` after a
cell whose best run diverged, ``*`` after a cell still missing some of its runs, yellow/blue highlighting —
in plain text (no colour: a pipe, a log file, ``NO_COLOR``) as a ``▲``/``▼`` after the cell, named in the legend.
With several seeds a cell reads ``mean ± std (n)`` and ``?`` marks a colour that is not robust over seeds
(``Cells.fragile``); one seed reads as the paper's tables do. With ``compare`` the paper's numbers and the
difference sit next to ours.
"""
from __future__ import annotations

import html as html_lib
import math
import os
import sys
import textwrap

import pandas as pd

from asym import tracking
from asym.study import table_keys

from .tables import (BETTER, COMPARE_ROW, MARGIN, WORSE, Cells, build_all, compare, load_runs, long_form,
                     select_protocol)

YELLOW, BLUE = "#ffeb3b", "#64b5f6"
ANSI = {WORSE: "\033[30;43m", BETTER: "\033[30;46m"}
RESET = "\033[0m"
MARK = {WORSE: "▲", BETTER: "▼"}  # the highlight in plain text: error up (worse), error down (better)
# the legend, phrase by phrase (a line breaks between phrases, never inside one)
PP = f"{MARGIN:g} pp"   # the highlighting margin as the legends write it (protocol decision 10)
HIGHLIGHT_LEGEND = {True: (f"yellow: ≥ {PP} worse than SGD", f"blue: ≥ {PP} better"),
                    False: (f"{MARK[WORSE]} ≥ {PP} worse than SGD (yellow)", f"{MARK[BETTER]} ≥ {PP} better (blue)")}
MARKS_LEGEND = ("— no run", "† best run diverged", "* some runs missing")
SEEDS_LEGEND = ("mean ± std (n seeds), coloured by the means",
                "? the colour is not robust: some seed's cell against that seed's SGD takes another colour, "
                "or the coloured mean is within 2 standard errors of SGD's")
FRAGILE = "?"
WIDTH = 120


def legend_phrases(cells: Cells, color: bool = True) -> list[str]:
    """What the table shows, phrase by phrase: the highlight as shown (colour, or ``▲``/``▼`` without it), the marks,
    and with several seeds how a cell reads."""
    return [*HIGHLIGHT_LEGEND[color], *MARKS_LEGEND, *(SEEDS_LEGEND if cells.multi_seed else ())]


def legend(cells: Cells, color: bool = True) -> str:
    return "; ".join(legend_phrases(cells, color))


def wrap_phrases(phrases: list[str], width: int, sep: str = "; ") -> list[str]:
    """``phrases`` joined by ``sep`` into lines of at most ``width`` characters, breaking only between phrases
    (a phrase longer than a line is wrapped at its words, alone on its lines)."""
    lines: list[str] = []
    for i, phrase in enumerate(phrases):
        piece = phrase + (sep.rstrip() if i < len(phrases) - 1 else "")
        if lines and len(lines[-1]) + 1 + len(piece) <= width:
            lines[-1] += " " + piece
        elif len(piece) <= width:
            lines.append(piece)
        else:
            lines += textwrap.wrap(piece, width)
    return lines


def fmt(value: float, diverged: bool = False, partial: bool = False, std: float = math.nan, n: int = 1,
        fragile: bool = False, spread: bool = False) -> str:
    """``12.34``, or with ``spread`` (a multi-seed table) ``12.34 ± 0.56 (3)``; then the marks ``?†*``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    text = f"{value:.2f}"
    if spread:
        text += (f" ± {std:.2f}" if n >= 2 else "") + f" ({n})"
    return text + (FRAGILE if fragile else "") + ("†" if diverged else "") + ("*" if partial else "")


def fmt_diff(value: float) -> str:
    return "" if value is None or math.isnan(value) else f"{value:+.2f}"


def text_cells(cells: Cells, marks: bool = False) -> pd.DataFrame:
    """Every cell as text; ``marks``: followed by its highlight's ``▲``/``▼`` (where there is no colour)."""
    spread, fragile = cells.multi_seed, cells.fragile()
    classes = cells.classes() if marks else None
    return pd.DataFrame([[fmt(cells.value.iat[i, j], cells.diverged.iat[i, j], cells.partial.iat[i, j],
                              cells.std.iat[i, j], int(cells.n.iat[i, j]), fragile.iat[i, j], spread)
                          + (MARK.get(classes.iat[i, j], "") if marks else "")
                          for j in range(cells.value.shape[1])] for i in range(cells.value.shape[0])],
                        index=cells.value.index, columns=cells.value.columns)


# ------------------------------------------------------------------------------------------------- terminal


def terminal(cells: Cells, compare_paper: bool = False, color: bool = True, width: int = WIDTH) -> str:
    """A fixed-width grid; columns wrap into blocks so no line exceeds ``width``. Highlighted cells are coloured,
    or without ``color`` followed by ``▲`` (worse) / ``▼`` (better); the legend says which."""
    text, classes = text_cells(cells, marks=not color), cells.classes()
    rows: list[tuple[str, list[str], list[str]]] = []   # (label, cells, highlight classes)
    paper = cells.paper() if compare_paper else None
    paper_classes = cells.classes(paper) if compare_paper else None
    for r, name in enumerate(cells.value.index):
        rows.append((str(name), list(text.iloc[r]), list(classes.iloc[r])))
        if compare_paper:
            ref = paper.iloc[r]
            stand_in = COMPARE_ROW.get(name)
            rows.append(("  paper" + (f" ({stand_in})" if stand_in else ""),
                         [fmt(v) + ("" if color else MARK.get(c, "")) for v, c in zip(ref, paper_classes.iloc[r])],
                         list(paper_classes.iloc[r])))
            rows.append(("  ours − paper", [fmt_diff(v) for v in cells.value.iloc[r] - ref], [""] * len(ref)))
    label_w = max([len(r[0]) for r in rows] + [len("dataset")]) + 1
    col_w = [max(len(c), *(len(r[1][j]) for r in rows)) + 2 for j, c in enumerate(cells.value.columns)]
    blocks, start = [], 0
    while start < len(col_w):  # greedy: as many columns per block as fit
        end, used = start, label_w
        while end < len(col_w) and (used + col_w[end] <= width or end == start):
            used += col_w[end]
            end += 1
        blocks.append(range(start, end))
        start = end

    def paint(s: str, cls: str) -> str:
        return f"{ANSI[cls]}{s}{RESET}" if color and cls in ANSI else s

    lines = [textwrap.fill(cells.title, width)]
    for block in blocks:
        lines.append("dataset".ljust(label_w) + "".join(cells.value.columns[j].rjust(col_w[j]) for j in block))
        for label, vals, cls in rows:
            lines.append(label.ljust(label_w) + "".join(
                " " * (col_w[j] - len(vals[j]) - 1) + paint(" " + vals[j], cls[j]) for j in block))
        lines.append("")
    lines.append(cells.summary() + ".")
    lines += wrap_phrases(legend_phrases(cells, color), width)
    if compare_paper:
        stand_ins = [f"{name} is compared with the paper's {COMPARE_ROW[name]} row (the same network): a stand-in, "
                     "not a reproduction" for name in cells.value.index if name in COMPARE_ROW]
        lines += [textwrap.fill(line, width) for line in stand_ins]
        lines.append(textwrap.fill(compare(cells).line(), width))
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------- HTML and LaTeX


def _css(cls: str) -> str:
    return {WORSE: f"background-color: {YELLOW}", BETTER: f"background-color: {BLUE}"}.get(cls, "")


def headed(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with "dataset" on the column header's row (pandas renders an index name as a row of its own, empty
    but for that word, in HTML and LaTeX alike)."""
    return frame.rename_axis(index=None, columns="dataset")


def paper_rows(index: pd.Index) -> list[str]:
    """The paper's row labels beside ours: the paper's own name where it stands in for ours (``COMPARE_ROW``)."""
    return [f"{COMPARE_ROW[r]} (stands in for {r})" if r in COMPARE_ROW else str(r) for r in index]


def stand_in_note(cells: Cells) -> str:
    """One sentence per row the paper lacks and compares with another row, or ``""``."""
    return " ".join(f"The paper has no {r} row: its {COMPARE_ROW[r]} numbers (the same network) stand in for it, "
                    "a stand-in, not a reproduction." for r in cells.value.index if r in COMPARE_ROW)


def styler(cells: Cells, values: pd.DataFrame | None = None, caption: str | None = None):
    """A pandas Styler of ``values`` (default: ours) coloured by its own SGD column; every label and cell
    HTML-escaped (a user's dataset may be called ``a<b>&c``). ``caption=""``: none (a page with the title as its
    heading); the paper's rows are labelled by the paper's own names (``paper_rows``)."""
    values = cells.value if values is None else values
    ours = values is cells.value
    classes = cells.classes(values)
    shown = text_cells(cells) if ours else values.map(fmt).set_axis(paper_rows(values.index))
    st = (headed(shown).style.apply(lambda _: headed(classes.set_axis(shown.index)).map(_css), axis=None)
          .format(escape="html").format_index(escape="html", axis=0).format_index(escape="html", axis=1))
    caption = cells.title if caption is None else caption
    return st.set_caption(html_lib.escape(caption, quote=False)) if caption else st


def html(cells: Cells, compare_paper: bool = False, caption: bool = True) -> str:
    """An HTML fragment: the table (and the paper's, the difference and the agreement line). ``caption=False``:
    the table's title is left to the page's heading (it appears once)."""
    parts = [styler(cells, caption=None if caption else "").set_table_attributes('class="asym-table"').to_html(),
             f"<p>{html_lib.escape(cells.summary())}. {html_lib.escape(legend(cells))}.</p>"]
    if compare_paper:
        paper = cells.paper()
        parts.append(styler(cells, paper, "The paper's numbers").set_table_attributes('class="asym-table"').to_html())
        if stand_in_note(cells):
            parts.append(f'<p class="stand-in">{html_lib.escape(stand_in_note(cells))}</p>')
        diff = headed((cells.value - paper).map(fmt_diff))
        parts.append(diff.style.format_index(escape="html", axis=0).format_index(escape="html", axis=1)
                     .set_caption("Ours − paper (pp)").set_table_attributes('class="asym-table"').to_html())
        parts.append(f"<p>{html_lib.escape(compare(cells).line())}</p>")
    return "\n".join(parts)


PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
table.asym-table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
table.asym-table td, table.asym-table th {{ border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }}
table.asym-table caption {{ font-weight: bold; text-align: left; padding: 0.3em 0; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>{title}</h1>
{body}
</body></html>
"""


def html_page(title: str, body: str) -> str:
    """A self-contained page (inline CSS, no external assets)."""
    return PAGE.format(title=html_lib.escape(title), body=body)


LATEX_PREAMBLE = r"""\documentclass{article}
\usepackage[T1]{fontenc}
\usepackage[table]{xcolor}
\usepackage{booktabs}
\usepackage[margin=1cm,landscape]{geometry}
\definecolor{asymworse}{HTML}{FFEB3B}
\definecolor{asymbetter}{HTML}{64B5F6}
\begin{document}
\footnotesize
"""


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                 "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}", "—": "---", "−": "--"}


def latex_text(label) -> str:
    """Any label as literal LaTeX text: each special character replaced in one pass (no double escaping)."""
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in str(label))


def latex(cells: Cells, compare_paper: bool = False) -> str:
    """A LaTeX table body (``\\cellcolor`` from xcolor's ``table`` option); every label escaped."""
    def body(values, caption):
        classes = cells.classes(values)
        shown = text_cells(cells) if values is cells.value else values.map(fmt).set_axis(paper_rows(values.index))
        classes = classes.set_axis(shown.index)
        shown = headed(shown).map(lambda s: s.replace("—", "--").replace("†", r"$^\dagger$").replace("*", r"$^*$")
                          .replace("±", r"$\pm$"))
        color = lambda cls: {WORSE: "cellcolor:{asymworse};", BETTER: "cellcolor:{asymbetter};"}.get(cls, "")
        st = (shown.style.apply(lambda _: headed(classes).map(color), axis=None)
              .format_index(latex_text, axis=0).format_index(latex_text, axis=1))
        return st.to_latex(caption=latex_text(caption), hrules=True,
                           position="h", column_format="l" + "r" * shown.shape[1])
    parts = [body(cells.value, cells.title)]
    if compare_paper:
        parts.append(body(cells.paper(), "The paper's numbers"))
    return "\n".join(parts)


def latex_document(fragments: list[str]) -> str:
    return LATEX_PREAMBLE + "\n".join(fragments) + "\n\\end{document}\n"


# ----------------------------------------------------------------------------------------- Markdown and CSV


MD_MARK = {WORSE: " 🟨", BETTER: " 🟦"}


MD_SPECIAL = set("\\`*_[]<>|#~$&{}^")


def md_text(label) -> str:
    """Any label as literal Markdown text (CommonMark backslash escapes): a ``|`` cannot split a cell, a ``<``
    cannot open a tag, ``*``/``_`` cannot start emphasis."""
    return "".join("\\" + ch if ch in MD_SPECIAL else ch for ch in str(label))


def markdown(cells: Cells, compare_paper: bool = False) -> str:
    text, classes = text_cells(cells), cells.classes()
    paper = cells.paper() if compare_paper else None
    cols = [md_text(c) for c in cells.value.columns]
    lines = [f"**{md_text(cells.title)}**", "", "| dataset | " + " | ".join(cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for r, name in enumerate(cells.value.index):
        lines.append(f"| {md_text(name)} | " + " | ".join(text.iat[r, j] + MD_MARK.get(classes.iat[r, j], "")
                                                for j in range(len(cols))) + " |")
        if compare_paper:
            lines.append(f"| *paper: {md_text(paper_rows([name])[0])}* | " + " | ".join(fmt(v) for v in paper.iloc[r])
                         + " |")
    lines += ["", f"{cells.summary()}. 🟨 ≥ {PP} worse than SGD, 🟦 ≥ {PP} better; † best run diverged; "
                  "* some runs missing." + (f" {SEEDS_LEGEND}." if cells.multi_seed else "")]
    if compare_paper:
        lines += [line for line in (stand_in_note(cells), compare(cells).line()) if line]
    return "\n".join(lines) + "\n"


def use_color(choice: str, interactive: bool) -> bool:
    """``auto``: colours only on a terminal, and never when $NO_COLOR is set."""
    return choice == "always" or (choice == "auto" and interactive and "NO_COLOR" not in os.environ)


def render_tables(cells_list: list[Cells], format: str, compare_paper: bool, color: bool) -> str:
    """Tables in one of ``terminal``, ``html``, ``latex``, ``markdown`` or ``csv`` (tidy long form)."""
    if format == "terminal":
        return "\n\n".join(terminal(c, compare_paper, color) for c in cells_list) + "\n"
    if format == "html":
        return html_page("Weight symmetry: tables", "\n".join(html(c, compare_paper) for c in cells_list))
    if format == "latex":
        return latex_document([latex(c, compare_paper) for c in cells_list])
    if format == "markdown":
        return "\n".join(markdown(c, compare_paper) for c in cells_list)
    return pd.concat([long_form(c) for c in cells_list]).to_csv(index=False, float_format="%.4g")


def print_sweep_tables(config, which: list[str], protocol_hash: str | None = None) -> None:
    """Called by the sweeper when a multirun ends: the tables that sweep covers, in the terminal, from the runs
    of the sweep's own protocol (``protocol_hash``)."""
    tracking.limit_http_retries()
    try:
        runs, line = select_protocol(load_runs(config.tracking.uri, config.tracking.experiment), None, protocol_hash)
    except Exception as e:  # the sweep's own result does not depend on printing a table
        print(f"(no table: {str(e).splitlines()[0][:200]})", file=sys.stderr)
        return
    text = render_tables(build_all(runs, table_keys(list(which)), line), "terminal", False,
                         use_color("auto", sys.stdout.isatty()))
    print("\n" + line + "\n\n" + text + "Paper side by side: asym-tables --compare" + (
        f" --tracking-uri {config.tracking.uri}" if config.tracking.uri else ""), flush=True)
