"""One source for every figure: README, BENCHMARKS.md and the config docstrings point at raw
results committed under results/, and agree with them."""

import json
import pathlib
import re
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "BENCHMARKS.md", *sorted((REPO / "configs").glob("*.py"))]


def _mentions(text: str) -> list[str]:
    return sorted(set(re.findall(r"results/[\w./-]+\w", text)))


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_every_result_a_document_cites_is_committed(doc):
    for path in _mentions(doc.read_text()):
        assert (REPO / path).exists(), f"{doc.name} cites {path}, which is not committed"


def test_benchmarks_md_shows_the_committed_bench_json():
    sys.path.insert(0, str(REPO / "scripts"))
    import bench
    text = (REPO / "BENCHMARKS.md").read_text()
    cited = [p for p in _mentions(text) if re.fullmatch(r"results/bench-[\w-]+\.json", p)]
    assert cited, "BENCHMARKS.md cites no results/bench-*.json"
    for path in cited:
        res = json.loads((REPO / path).read_text())
        # a sweep's file is cited for its sweep table, the others for their main table
        table = (bench.sweep_markdown(res["sweep"]) if res["sweep"]
                 else bench.markdown(res["machine"], res["rows"]))
        rows = [ln for ln in table.splitlines() if ln.startswith("| ") and "---" not in ln]
        assert len(rows) > 2, path
        for line in rows:
            assert line in text, f"{path}: BENCHMARKS.md lacks the row {line!r}"


def _final(metrics: pathlib.Path) -> dict:
    return json.loads(metrics.read_text().strip().splitlines()[-1])


CONFIGS = sorted(p for p in (REPO / "configs").glob("*.py") if p.name != "__init__.py")


def _measured_paragraph(name: str, doc: str) -> str | None:
    """A config docstring's one `Measured ...` paragraph, or None where it has instead one
    `Not measured yet ...` paragraph (a recipe whose run is still to come), which cites no run.
    Anything else fails: none of either, several, or both."""
    paragraphs = [p.strip() for p in doc.split("\n\n")]
    measured = [p for p in paragraphs if p.startswith("Measured")]
    pending = [p for p in paragraphs if p.startswith("Not measured yet")]
    assert len(measured) + len(pending) == 1, (
        f"{name}: one 'Measured' or one 'Not measured yet' paragraph, got {len(measured)} and "
        f"{len(pending)}")
    if pending:
        assert "results/runs/" not in pending[0], (
            f"{name}: its 'Not measured yet' paragraph cites a run: call it 'Measured'")
        return None
    return measured[0]


@pytest.mark.parametrize("doc, error", [
    ("Recipe.\n\nMeasured: `results/runs/x/metrics.jsonl` 0.5000.", None),
    ("Recipe.\n\nNot measured yet. The paper reports 93.0%.", None),
    ("Recipe only.", "got 0 and 0"),
    ("Recipe.\n\nMeasured: a.\n\nNot measured yet.", "got 1 and 1"),
    ("Recipe.\n\nNot measured yet.\n\nNot measured yet either.", "got 0 and 2"),
    ("Recipe.\n\nNot measured yet: `results/runs/x/metrics.jsonl`.", "cites a run"),
])
def test_the_measured_rule_itself(doc, error):
    if error is None:
        _measured_paragraph("c.py", doc)
    else:
        with pytest.raises(AssertionError, match=error):
            _measured_paragraph("c.py", doc)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_a_configs_measured_line_matches_its_run(config):
    """One `Measured ...` paragraph per config, or one `Not measured yet ...` paragraph; each
    `results/runs/<name>/metrics.jsonl` a Measured paragraph cites is followed by that run's
    final test accuracy."""
    doc = config.read_text().split('"""')[1]
    measured = _measured_paragraph(config.name, doc)
    if measured is None:
        return
    cited = re.findall(r"(results/runs/[\w-]+/metrics\.jsonl)\D+?(0\.\d{4})", measured)
    assert cited, f"{config.name}: its Measured paragraph cites no run"
    for path, acc in cited:
        got = _final(REPO / path)["test_accuracy"]
        assert f"{got:.4f}" == acc, f"{config.name}: {acc} but {path} ends at {got:.4f}"
