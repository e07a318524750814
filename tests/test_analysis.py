"""Tables 2–5 from a real MLflow SQLite store of runs with known metrics: cells, highlighting, comparison, output."""
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from dataclasses import asdict

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from asym import tracking
from asym.analysis import figures, render
from asym.analysis.tables import BETTER, SAME, TABLES, WORSE, Cells, build, compare, highlight, load_runs, long_form
from asym.study import table_keys
from asym.protocol import Protocol

MULTS = (100, 10, 1, 0.1, 0.01)
PROTOCOL = asdict(Protocol(epochs=3, lr_steps=[2]))


def log_run(uri, model, dataset, lr_mult, best, status="finished", procedure="standard", seed=0, freeze="none",
            protocol=PROTOCOL):
    """One run through the schema's own writer: epochs 0..3 whose minimum is ``best``."""
    history = [best + 50, best + 1, best, best + 0.5] if status != "diverged" else [best, None]
    epochs = [{"epoch": e, "val_error": v, "train_error": v, "train_loss": 1.0, "lr": 1e-3}
              for e, v in enumerate(history)]
    run = {"model": model, "dataset": dataset, "lr_mult": lr_mult, "freeze": freeze, "procedure": procedure,
           "seed": seed}
    t = tracking.RunTracker(uri, tracking.DEFAULT_EXPERIMENT, run, protocol, {"model": model})
    t.start(None, "test")
    for rec in epochs:
        if rec["val_error"] is not None:
            t.log_epoch(rec)
    finite = [v for v in history if v is not None]
    result = {"epochs": [r for r in epochs if r["val_error"] is not None], "best_val_error": min(finite),
              "best_epoch": history.index(min(finite)), "status": status}
    assert t.finish(result, "/nonexistent")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """MNIST: SGD best 10.00; BM 12.99, BN 13.00, BN+BM 13.01 (highlight edges); NuSF 7.00; uSF diverged;
    uSF+BM 20 (batch 100) vs 15 (batch 500 later). CIFAR: BM at five multipliers, SGD at only three."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    for model, best in [("SGD", 10.0), ("BM", 12.99), ("BN", 13.0), ("BN+BM", 13.01), ("NuSF", 7.0)]:
        for i, m in enumerate(MULTS):
            log_run(uri, model, "mnist", m, best + abs(i - 2) * 4)  # the best at lr×1
    for m in MULTS:
        log_run(uri, "uSF", "mnist", m, 88.0 + m / 100, status="diverged")
        log_run(uri, "uSF+BM", "mnist", m, 20.0 + m / 100)
        log_run(uri, "uSF+BM", "mnist", m, 15.0 + m / 100, procedure="large_batch")
        log_run(uri, "BM1", "cifar10", m, 30.0)  # BM1 is BM
    for m in (10, 1, 0.1):
        log_run(uri, "SGD", "cifar10", m, 25.0 + m)
    log_run(uri, "SGD", "mnist", 1, 1.0, status="failed", seed=1)  # failed runs never count
    return uri


@pytest.fixture(scope="module")
def runs(store):
    return load_runs(store)


def test_cells_take_the_min_over_epochs_multipliers_and_procedures(runs):
    t2 = build(TABLES["2"], runs)
    assert list(t2.value.index) == ["MNIST", "CIFAR"]
    mnist = t2.value.loc["MNIST"]
    assert mnist["SGD"] == pytest.approx(10.0)          # not the failed run's 1.0, not another multiplier
    assert mnist["uSF+BM"] == pytest.approx(15.0001)       # the better procedure
    assert mnist["uSF"] == pytest.approx(88.0001) and t2.diverged.loc["MNIST", "uSF"]
    assert not t2.diverged.loc["MNIST", "SGD"]
    assert t2.value.loc["CIFAR", "BM"] == 30.0 and t2.value.loc["CIFAR", "SGD"] == pytest.approx(25.1)


def test_missing_and_partial_cells_are_counted(runs):
    t2 = build(TABLES["2"], runs)
    assert math.isnan(t2.value.loc["MNIST", "brSF+BN+BM"])
    assert t2.partial.loc["CIFAR", "SGD"] and not t2.partial.loc["CIFAR", "BM"]
    assert not t2.partial.loc["MNIST", "uSF+BM"]
    # MNIST: 4 of 11 columns never ran; CIFAR: 9 never ran, SGD lacks two multipliers
    assert t2.incomplete == 14 and t2.summary() == "8 of 22 cells complete, 14 incomplete"
    assert "—" in render.terminal(t2, color=False)


def test_table5_reads_BM1_as_BM(runs):
    t5 = build(TABLES["5"], runs)
    assert t5.value.loc["MNIST", "BM1"] == pytest.approx(12.99)


@pytest.mark.parametrize("value,sgd,expected", [
    (12.99, 10.0, SAME), (13.0, 10.0, WORSE), (13.01, 10.0, WORSE),
    (7.01, 10.0, SAME), (7.0, 10.0, BETTER), (6.99, 10.0, BETTER),
    (25.73, 22.73, WORSE), (19.73, 22.73, BETTER),  # 3.00 in decimal, not quite in binary
    (float("nan"), 10.0, SAME),
])
def test_highlight_edges(value, sgd, expected):
    assert highlight(value, sgd) == expected


def test_highlight_classes_in_a_built_table(runs):
    cls = build(TABLES["2"], runs).classes()
    assert cls.loc["MNIST", ["SGD", "BM", "BN", "BN+BM", "NuSF"]].tolist() == [SAME, SAME, WORSE, WORSE, BETTER]


def test_c2_highlights_against_sgd_clamped_on_the_same_side():
    spec = TABLES["4c2"]
    value = pd.DataFrame([[10.0, 50.0, 13.0, 47.0, 12.0, 53.0, 7.0, 50.0]], index=["MNIST"], columns=spec.columns)
    cells = Cells(spec, value, value.astype(bool) & False, value.astype(bool) & False)
    assert cells.classes().loc["MNIST"].tolist() == [SAME, SAME, WORSE, BETTER, SAME, WORSE, BETTER, SAME]


def paper_cells(key, offsets):
    spec = TABLES[key]
    value = spec.paper().loc[["MNIST", "CIFAR", "SVHN"]] + offsets
    false = value.astype(bool) & False
    return Cells(spec, value, false, false)


def test_comparison_counts_cells_within_1_and_3_points_highlight_agreement_and_rank_correlation():
    exact = compare(paper_cells("2", 0.5))
    assert (exact.cells, exact.within_1, exact.within_3) == (33, 33, 33)
    assert exact.highlight_match == 1.0 and (exact.rank_corr == 1.0).all()
    offsets = np.zeros((3, 11))
    offsets[0, 1], offsets[1, 2], offsets[2, 3] = 2.0, -5.0, 50.0
    shifted = compare(paper_cells("2", offsets))
    assert (shifted.within_1, shifted.within_3) == (30, 31)
    # 30 coloured-or-plain cells (SGD excluded); only SVHN's BN+BM changes colour (plain → yellow at +50);
    # CIFAR's BN stays blue at −5
    assert shifted.highlight_match == pytest.approx(29 / 30)
    assert shifted.rank_corr["SVHN"] < 1.0 and shifted.rank_corr["MNIST"] == 1.0
    flipped = compare(paper_cells("2", np.where(np.arange(11) == 0, 0.0, -100.0)))  # everything "better"
    assert flipped.highlight_match < 0.5


def test_terminal_html_markdown_csv_show_values_marks_and_highlights(runs, tmp_path):
    t2 = build(TABLES["2"], runs)
    ansi = render.terminal(t2, compare_paper=True, color=True)
    assert "\033[30;43m" in ansi and "\033[30;46m" in ansi
    plain = render.terminal(build(TABLES["3"], runs), compare_paper=True, color=False)
    assert "\033" not in plain and max(len(line) for line in plain.splitlines()) <= 120
    assert "paper" in plain and "within ±1 pp" in plain
    html = render.html_page("t", render.html(t2, compare_paper=True))
    assert "#ffeb3b" in html and "#64b5f6" in html and "88.00†" in html and "The paper's numbers" in html
    md = render.markdown(t2)
    assert "| MNIST | 10.00 | 12.99 | 13.00 🟨 | 13.01 🟨 | 88.00† 🟨 | 7.00 🟦 |" in md
    csv = pd.read_csv(pd.io.common.StringIO(long_form(t2).to_csv(index=False)))
    row = csv[(csv.dataset == "MNIST") & (csv.model == "BN")].iloc[0]
    assert row.highlight == WORSE and row.paper == 0.52 and row["diff"] == pytest.approx(12.48)


def test_latex_compiles_or_parses(runs, tmp_path):
    doc = render.latex_document([render.latex(build(TABLES["2"], runs), compare_paper=True)])
    assert doc.count(r"\begin{tabular}") == doc.count(r"\end{tabular}") == 2
    assert r"\cellcolor{asymworse}" in doc and r"\cellcolor{asymbetter}" in doc and r"\usepackage[table]{xcolor}" in doc
    engine = shutil.which("pdflatex") or shutil.which("lualatex")
    if engine is None:
        assert "{asymworse} 13.00" in doc  # parsed: the colour precedes the cell it paints
        return
    (tmp_path / "t.tex").write_text(doc)
    res = subprocess.run([engine, "-interaction=nonstopmode", "t.tex"], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-2000:]


def test_figures_are_written(runs, store, tmp_path):
    t3 = build(TABLES["3"], runs)
    t3.value.loc["MNIST", ["brSF+BN+BM", "brSF-p50+BN+BM", "frSF-p100+BN+BM"]] = [1.0, 5.0, 9.0]
    paths = figures.flip_probability(t3, tmp_path)
    paths += figures.learning_curves(store, tracking.DEFAULT_EXPERIMENT, runs, "MNIST", ["SGD", "BN"], tmp_path)
    paths += figures.difference_heatmap(build(TABLES["2"], runs), tmp_path)
    assert len(paths) == 6
    for p in paths:
        head = p.read_bytes()[:100]
        assert head.startswith(b"\x89PNG") if p.suffix == ".png" else b"<svg" in p.read_bytes()[:2000]


def test_table_keys_expand_4_and_all_and_reject_an_unknown_table():
    assert table_keys("all") == ["2", "3", "4c1", "4c2", "5"] and table_keys("4") == ["4c1", "4c2"]
    with pytest.raises(ValueError, match="choose from"):
        table_keys("6")


def cli(*args, timeout=120):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_cli_tables_compare_and_report(store, tmp_path):
    res = cli("asym-tables", "--table", "2", "--compare", "--tracking-uri", store, "--color", "always")
    assert res.returncode == 0, res.stderr
    assert "Table 2" in res.stdout and "\033[30;43m" in res.stdout and "paper" in res.stdout
    out = tmp_path / "t.html"
    res = cli("asym-tables", "--format", "html", "--out", str(out), "--tracking-uri", store)
    assert res.returncode == 0 and "#ffeb3b" in out.read_text()
    res = cli("asym-report", "--out", str(tmp_path / "report.html"), "--tracking-uri", store)
    assert res.returncode == 0, res.stderr
    page = (tmp_path / "report.html").read_text()
    # the learning curves and a heat map for each table with a cell to compare (Table 4 C2 has none; no Exp. B run)
    assert page.count("data:image/png;base64,") == 5 and "Table 5" in page
    assert len(list((tmp_path / "report_figures").glob("*.svg"))) == 5


@pytest.mark.parametrize("uri,message", [("sqlite:///{tmp}/none.db", "no runs in experiment"),
                                         ("http://127.0.0.1:9", "cannot read MLflow at http://127.0.0.1:9")])
@pytest.mark.slow
def test_cli_empty_or_unreachable_store(tmp_path, uri, message):
    res = cli("asym-tables", "--tracking-uri", uri.format(tmp=tmp_path))
    assert res.returncode == 1
    assert res.stderr.strip().count("\n") == 0 and message in res.stderr, res.stderr
    assert not (tmp_path / "none.db").exists()


@pytest.mark.slow
def test_cli_unknown_table_is_one_line_exit_2(store):
    res = cli("asym-tables", "--table", "7", "--tracking-uri", store)
    assert res.returncode == 2 and "no table '7'" in res.stderr


@pytest.mark.slow
def test_one_protocol_per_table(tmp_path):
    """A store with the demo protocol (SGD/BN on digits, 2 runs) and a shorter look (SGD/BN/BM, 6 runs, better
    numbers): a cell never mixes them; the default is the protocol with the most runs, --protocol chooses by
    name or hash prefix and the header says which; the tables printed at a sweep's end use that sweep's
    protocol; asym-status lists the protocols with their run counts."""
    from asym.config import train_option
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    demo = asdict(train_option("demo"))
    look = {**demo, "epochs": 1}
    for model, best in (("SGD", 20.0), ("BN", 22.0)):
        log_run(uri, model, "digits", 10, best, protocol=demo)
    for model, best in (("SGD", 5.0), ("BN", 6.0), ("BM", 7.0)):
        for m in (10, 1):
            log_run(uri, model, "digits", m, best + m, protocol=look)
    short, named = tracking.protocol_hash(look), tracking.protocol_hash(demo)

    def table(*args):
        res = cli("asym-tables", "--table", "2", "--format", "csv", "--tracking-uri", uri, *args)
        assert res.returncode == 0, res.stderr
        df = pd.read_csv(pd.io.common.StringIO(res.stdout))
        return df.set_index("model")["error"].dropna().to_dict(), set(df["protocol"])
    assert table() == ({"SGD": 6.0, "BN": 7.0, "BM": 8.0}, {short[:8]})          # most runs
    assert table("--protocol", "demo") == ({"SGD": 20.0, "BN": 22.0}, {f"demo ({named[:8]})"})
    assert table("--protocol", short[:6])[0] == {"SGD": 6.0, "BN": 7.0, "BM": 8.0}
    res = cli("asym-tables", "--table", "2", "--tracking-uri", uri, "--protocol", "demo", "--color", "never")
    assert res.returncode == 0 and res.stdout.startswith(f"protocol demo ({named[:8]}): 2 runs; also in this store: "
                                                         f"{short[:8]} (6 runs)"), res.stdout
    assert f"Table 2 — Exp. A: sign-concordant feedback [protocol demo ({named[:8]})]" in res.stdout
    bad = cli("asym-tables", "--tracking-uri", uri, "--protocol", "paper")
    assert bad.returncode == 2 and bad.stderr.startswith("error: no protocol 'paper'") and \
        len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    res = cli("asym-report", "--out", str(tmp_path / "r.html"), "--tracking-uri", uri, "--protocol", "demo")
    assert res.returncode == 0, res.stderr
    assert f"protocol demo ({named[:8]}): 2 runs" in (tmp_path / "r.html").read_text()

    # a sweep of yet another protocol (1 run): its own tables at the end, not the store's biggest protocol
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    sweep = subprocess.run(["asym-train", "-m", "model=SGD", "dataset=digits", "lr_mult=100", "train=demo",
                            "train.epochs=2", "tables=[2]", f"tracking.uri={uri}", f"output_root={tmp_path}/runs"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    mine = tracking.protocol_hash({**demo, "epochs": 2})
    assert f"protocol {mine[:8]}: 1 runs; also in this store: {short[:8]} (6 runs), demo ({named[:8]}) (2 runs)" \
        in sweep.stdout, sweep.stdout
    best = tracking.runs_table(uri).set_index("protocol_hash").loc[mine, "best_val_error"]
    digits_row = next(line for line in sweep.stdout.splitlines() if line.startswith("Digits"))
    assert digits_row.split()[1:4] == [f"{best:.2f}", "—", "—"]  # SGD from this sweep; BM, BN not in its protocol
    status = cli("asym-status", str(tmp_path / "runs"))
    assert status.returncode == 0, status.stderr
    assert f"{short[:8]}" in status.stdout and "6 runs" in status.stdout and f"demo ({named[:8]})" in status.stdout
    assert any(line.strip().startswith(mine[:8]) and "1 runs" in line and "this sweep" in line
               for line in status.stdout.splitlines()), status.stdout


ODD_NAMES = ["we&ird%na#me_$x{y}~z^w\\q<b>", "my|set <i>x 100%"]  # no "/": a file name


def unescaped(text: str, ch: str) -> int:
    """How many times ``ch`` occurs in ``text`` not preceded by a backslash."""
    import re
    return len(re.findall(r"(?<!\\)" + re.escape(ch), text))


def test_user_names_are_text_in_every_renderer(tmp_path):
    """A folder:/npz: dataset named with & % # _ $ { } ~ ^ \\ | <…>: its row is its short readable name (the
    file or folder stem, as in its MLflow run name) and stays literal text in LaTeX, HTML, Markdown and figures."""
    from html.parser import HTMLParser
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    datasets = [f"npz:/data/{ODD_NAMES[0]}.npz", f"folder:/data/{ODD_NAMES[1]}"]
    for d in datasets:
        for model, best in (("SGD", 10.0), ("BN", 20.0)):
            log_run(uri, model, d, 1, best)
    runs = load_runs(uri)
    assert set(runs["row"]) == set(ODD_NAMES)
    for d, name in zip(datasets, ODD_NAMES):
        run = {"model": "SGD", "dataset": d, "lr_mult": 1.0, "freeze": "none", "procedure": "standard", "seed": 0}
        assert tracking.run_name(run) == f"SGD ×1 · {name}"
    t2 = build(TABLES["2"], runs)
    ncols = t2.value.shape[1]

    class Cells(HTMLParser):
        def __init__(self):
            super().__init__()
            self.text, self.tags = [], []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)

        def handle_data(self, data):
            self.text.append(data)
    page = Cells()
    page.feed(render.html_page("t", render.html(t2, compare_paper=True)))
    assert not {"b", "i"} & set(page.tags), "a dataset name became markup"
    for name in ODD_NAMES:
        assert name in [t.strip() for t in page.text], name

    md = render.markdown(t2)
    rows = [line for line in md.splitlines() if line.startswith("| ") and "10.00" in line]
    assert len(rows) == 2 and all(unescaped(line, "|") == ncols + 2 for line in rows), rows
    assert "<b>" not in md and "<i>" not in md

    doc = render.latex_document([render.latex(t2, compare_paper=True)])
    body = [line for line in doc.splitlines() if "10.00" in line]
    assert len(body) == 2
    for line in body:
        assert unescaped(line, "&") == ncols and unescaped(line, "%") == 0 and unescaped(line, "#") == 0, line
        assert unescaped(line, "{") == unescaped(line, "}"), line
    engine = shutil.which("pdflatex")
    if engine:  # CI installs Debian's texlive where it can
        (tmp_path / "t.tex").write_text(doc)
        res = subprocess.run([engine, "-interaction=nonstopmode", "-halt-on-error", "t.tex"], cwd=tmp_path,
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stdout[-2000:]
        pdftotext = shutil.which("pdftotext")
        if pdftotext:
            text = subprocess.run([pdftotext, "t.pdf", "-"], cwd=tmp_path, capture_output=True, text=True).stdout
            assert "100%" in text and "we&ird%na#me" in text

    paths = figures.learning_curves(uri, tracking.DEFAULT_EXPERIMENT, runs, ODD_NAMES[0], None, tmp_path)
    paths += figures.difference_heatmap(t2, tmp_path)
    assert len(paths) == 4 and all(p.exists() and p.parent == tmp_path for p in paths)


# --------------------------------------------------------------------------------- marks where there is no colour


def test_plain_text_marks_highlighted_cells_and_its_legend_says_so(runs):
    """No colour (a pipe, a log, NO_COLOR): a worse cell ends in ▲, a better one in ▼, the paper's too, and the legend
    names the marks it shows — the colour names only when there is colour. The legend breaks between phrases only."""
    t2 = build(TABLES["2"], runs)
    plain = render.terminal(t2, compare_paper=True, color=False, width=60)
    mnist = " ".join(line for line in plain.splitlines() if line.startswith("MNIST"))  # every block of columns
    assert "13.00▲" in mnist and "13.01▲" in mnist and "7.00▼" in mnist and "12.99▲" not in mnist, mnist
    assert "10.00▲" not in mnist and "10.00▼" not in mnist  # SGD is the baseline, never marked
    paper = " ".join(line for line in plain.splitlines() if line.startswith("  paper"))
    assert "88.65▲" in paper, paper  # the paper's uSF on MNIST: ≥ 3 pp worse than its SGD
    legend = [line for line in plain.splitlines() if "pp worse" in line or "pp better" in line]
    assert any("▲ ≥ 3 pp worse than SGD" in line for line in legend) and \
        any("▼ ≥ 3 pp better" in line for line in legend), plain
    text = " ".join(plain.split())
    for phrase in render.legend_phrases(t2, color=False):
        assert any(phrase in line for line in plain.splitlines()), f"{phrase!r} broken over lines"
        assert phrase in text
    colour = render.terminal(t2, color=True)
    assert "▲" not in colour and "▼" not in colour and "yellow: ≥ 3 pp worse than SGD" in colour
    assert max(len(line) for line in plain.splitlines()) <= 60


def test_the_tables_printed_when_a_sweep_ends_keep_their_marks(store, capsys):
    """At the end of a sweep whose output goes to a log (not a terminal), the table still shows ▲/▼."""
    from omegaconf import OmegaConf
    config = OmegaConf.create({"tracking": {"uri": store, "experiment": tracking.DEFAULT_EXPERIMENT}})
    render.print_sweep_tables(config, ["2"])
    out = capsys.readouterr().out
    assert "\033" not in out and "13.00▲" in out and "7.00▼" in out and "▲ ≥ 3 pp worse than SGD" in out, out


# --------------------------------------------------------------------------------------- the report reads well


def digits_cells(key="2"):
    """Hand-made cells for the demo's Digits row and MNIST (the paper's numbers, shifted), to read renderings."""
    spec = TABLES[key]
    value = spec.paper().loc[["MNIST", "MNIST"]].set_axis(pd.Index(["Digits", "MNIST"], name="dataset")) + 4.0
    value.iloc[0, 1] = 40.0  # Digits' second column far above its SGD
    false = value.astype(bool) & False
    return Cells(spec, value, false, false, protocol="protocol demo (3d987034): 22 runs")


def test_report_tables_label_the_paper_row_and_have_one_header_row():
    """The paper's row beside Digits is MNIST's and says so (a sentence near the table too); no table, in HTML or
    LaTeX, has a header row holding only "dataset"; in the report each table's title appears once."""
    from html import escape
    from html.parser import HTMLParser

    from asym.analysis import report

    class Table(HTMLParser):
        def __init__(self):
            super().__init__()
            self.head_rows, self.row_heads, self.where = [], [], []

        def handle_starttag(self, tag, attrs):
            self.where.append(tag)
            if tag == "tr" and "thead" in self.where:
                self.head_rows.append([])

        def handle_endtag(self, tag):
            while self.where and self.where.pop() != tag:
                pass

        def handle_data(self, data):
            if "thead" in self.where and "th" in self.where and data.strip():
                self.head_rows[-1].append(data.strip())
            elif "tbody" in self.where and "th" in self.where and data.strip():
                self.row_heads.append(data.strip())
    cells = digits_cells()
    fragment = render.html(cells, compare_paper=True)
    tables = fragment.split("</table>")[:-1]
    assert len(tables) == 3
    for t in tables:
        parsed = Table()
        parsed.feed(t + "</table>")
        assert len(parsed.head_rows) == 1 and parsed.head_rows[0][0] == "dataset", parsed.head_rows
    paper = Table()
    paper.feed(tables[1] + "</table>")
    assert paper.row_heads == ["MNIST (stands in for Digits)", "MNIST"]
    assert "The paper has no Digits row: its MNIST numbers (the same network) stand in for it" in fragment
    md = render.markdown(cells, compare_paper=True)
    assert "| *paper: MNIST (stands in for Digits)* |" in md and "The paper has no Digits row" in md
    latex = render.latex(cells, compare_paper=True)
    for body in latex.split(r"\begin{tabular}")[1:]:
        head = body.split(r"\toprule")[1].split(r"\midrule")[0].strip().splitlines()
        assert len(head) == 1 and head[0].startswith("dataset &"), head
    assert "MNIST (stands in for Digits)" in latex
    page = report.report_page([cells, digits_cells("5")], "protocol demo", [])
    for c in (cells, digits_cells("5")):
        assert page.count(escape(c.title)) == 1, c.title


# ------------------------------------------------------------------------------------------------ the figures


def curve_frame(models, epochs=2, diverged=()):
    """curve_data's shape for ``models``: model k's error at epoch e is 50 − 10·e + k (a diverged one stops at 1)."""
    rows = []
    for k, m in enumerate(models):
        last = 1 if m in diverged else epochs
        rows += [{"model": m, "epoch": e, "mean": 50.0 - 10 * e + k, "lo": 50.0 - 10 * e + k,
                  "hi": 50.0 - 10 * e + k, "n": 1, "lr_mult": 10.0, "diverged": m in diverged}
                 for e in range(last + 1)]
    return pd.DataFrame(rows)


def test_learning_curves_give_every_model_its_colour_and_line_style_and_mark_divergence():
    """14 models on one plot (Table 2's 11 and three more): each line is its model's data, no two lines share a colour
    or a dash pattern; one-epoch curves get integer epoch ticks; a diverged run is labelled and ends in a large ×."""
    models = [*TABLES["2"].columns, "RndF", "BM2", "frSF-p50+BN+BM"]
    data = curve_frame(models, epochs=1, diverged=("uSF",))
    fig, caption = figures.learning_curves_figure(data, "Digits")
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert len(lines) == len(models)
    for k, m in enumerate(models):
        label = next(l for l in lines if l.startswith(m + " ("))
        x, y = lines[label].get_data()
        want = data[data.model == m]
        assert list(x) == list(want["epoch"]) and list(y) == list(want["mean"]), m
    colours = [matplotlib.colors.to_rgba(line.get_color()) for line in lines.values()]
    # matplotlib has no public getter for a line's dash pattern; _unscaled_dash_pattern is what set_linestyle stored
    dashes = [line._unscaled_dash_pattern for line in lines.values()]
    assert len(set(colours)) == len(models) and len(set(map(repr, dashes))) == len(models)
    fig.canvas.draw()
    lo, hi = ax.get_xlim()
    shown = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert shown == [0, 1] and all(float(t).is_integer() for t in shown)
    assert "diverged" in next(l for l in lines if l.startswith("uSF (")), list(lines)
    crosses = [line for line in ax.get_lines() if line.get_marker() == "X"]
    assert len(crosses) == 1 and list(crosses[0].get_xdata()) == [1] and \
        matplotlib.colors.to_rgba(crosses[0].get_color()) == matplotlib.colors.to_rgba(
            lines[next(l for l in lines if l.startswith("uSF ("))].get_color())
    assert caption.endswith(".") and caption[0].isupper() and "diverged" in caption
    plt.close(fig)


def test_learning_curves_from_mlflow_mark_the_diverged_run(runs, store):
    data = figures.curve_data(store, runs, "MNIST", ["SGD", "uSF"])
    assert data.groupby("model")["diverged"].first().to_dict() == {"SGD": False, "uSF": True}
    sgd = data[data.model == "SGD"]
    assert list(sgd["mean"]) == [60.0, 11.0, 10.0, 10.5]  # lr×1's history: best + 50, + 1, + 0, + 0.5


def test_exp_b_tells_batchwise_from_fixed_and_shows_p_0_whole(runs):
    """Exp. B: per dataset the batchwise and fixed series differ in colour, marker and line style; each series'
    points are the table's cells at p = 0, 25, 50, 75, 100; the x axis leaves room on both sides of p = 0 and 100."""
    t3 = build(TABLES["3"], runs)
    t3.value.loc["MNIST", ["brSF+BN+BM", "brSF-p50+BN+BM", "frSF+BN+BM", "frSF-p100+BN+BM"]] = [1.0, 5.0, 2.0, 9.0]
    fig, caption = figures.flip_probability_figure(t3)
    ax = fig.axes[0]
    series = {c.get_label(): c.lines[0] for c in ax.containers}  # errorbar: the data line of each container
    assert set(series) == {"MNIST (batchwise)", "MNIST (fixed)"}, list(series)
    b, f = series["MNIST (batchwise)"], series["MNIST (fixed)"]
    assert list(b.get_xdata()) == [0, 25, 50, 75, 100]
    np.testing.assert_array_equal(b.get_ydata(), [1.0, np.nan, 5.0, np.nan, np.nan])
    np.testing.assert_array_equal(f.get_ydata(), [2.0, np.nan, np.nan, np.nan, 9.0])
    assert b.get_color() != f.get_color() and b.get_marker() != f.get_marker() and b.get_linestyle() != f.get_linestyle()
    lo, hi = ax.get_xlim()
    assert lo <= -5 and hi >= 105, (lo, hi)
    assert caption.endswith(".") and "batchwise" in caption and "fixed" in caption
    plt.close(fig)


def test_heat_maps_share_one_scale_centred_on_0_with_legible_numbers_and_distinct_titles(runs):
    """Every table's heat map on one diverging scale ±(largest |ours − paper|), centred on 0; each number black or
    white, whichever contrasts with its cell (WCAG ratio ≥ 4.5); titles and captions name their table."""
    cells_list = [build(TABLES[k], runs) for k in ("2", "3", "4c1", "4c2", "5")]
    limit = figures.heatmap_limit(cells_list)
    largest = max(np.abs(d[np.isfinite(d)]).max() for d in map(figures.difference, cells_list) if np.isfinite(d).any())
    assert limit >= largest and limit - largest < 1
    titles, captions = [], []
    for c in cells_list:
        fig, caption = figures.heatmap_figure(c, limit)
        ax = fig.axes[0]
        norm = ax.images[0].norm
        assert (norm.vmin, norm.vmax, norm.vcenter) == (-limit, limit, 0.0)
        cmap, diff = ax.images[0].cmap, figures.difference(c)
        texts = ax.texts
        assert len(texts) == np.isfinite(diff).sum()
        for t in texts:
            i, j = round(t.get_position()[1]), round(t.get_position()[0])
            assert t.get_text() == f"{diff[i, j]:+.1f}"
            background = cmap(norm(diff[i, j]))
            assert figures.contrast(background, matplotlib.colors.to_rgba(t.get_color())) >= 4.5, (t.get_text(),
                                                                                                 t.get_color())
        titles.append(ax.get_title())
        captions.append(caption)
        plt.close(fig)
    assert len(set(titles)) == len(titles), titles
    assert "Table 4, Exp. C1: ours − paper" in titles and "Table 4, Exp. C2: ours − paper" in titles
    assert all(c.endswith(".") and c[0].isupper() and f"±{limit:g} pp" in c for c in captions)
    # the extremes: a cell at +limit is dark red and reads white, one at 0 is near white and reads black
    cmap = plt.get_cmap(figures.HEATMAP_CMAP)
    norm = matplotlib.colors.TwoSlopeNorm(0.0, -limit, limit)
    assert figures.text_color(cmap(norm(limit))) == "white" and figures.text_color(cmap(norm(0.0))) == "black"


def test_figures_raise_no_pandas_deprecation_warning(runs, store, tmp_path):
    import warnings
    with warnings.catch_warnings():
        for category in (DeprecationWarning, FutureWarning):
            warnings.filterwarnings("error", category=category, module=r"asym\.analysis\.figures")
        figures.learning_curves(store, tracking.DEFAULT_EXPERIMENT, runs, "MNIST", ["SGD", "BN", "uSF"], tmp_path)
        cells_list = [build(TABLES[k], runs) for k in ("2", "3")]
        figures.flip_probability(cells_list[1], tmp_path)
        figures.difference_heatmap(cells_list[0], tmp_path, figures.heatmap_limit(cells_list))
        figures.robustness(cells_list, tmp_path)


def test_report_figures_have_sentences_for_captions(runs, store, tmp_path):
    from asym.analysis import report
    cells_list = [build(TABLES[k], runs) for k in ("2", "3", "4c1", "4c2", "5")]
    plots = report.figures_of(cells_list, runs, store, tracking.DEFAULT_EXPERIMENT, tmp_path)
    page = report.report_page(cells_list, "protocol x", plots)
    import re
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page)
    assert len(captions) == len(plots) == 5  # learning curves, heat maps of Tables 2, 3, 4 C1, 5 (4 C2: no cell)
    for number, (caption, plot) in enumerate(zip(captions, plots), start=1):
        assert caption.startswith(f"Figure {number}. ") and caption.endswith(".") and len(caption.split()) >= 12
        assert plot.name not in caption  # not a file name
