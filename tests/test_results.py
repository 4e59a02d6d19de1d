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


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_a_configs_measured_line_matches_its_run(config):
    """One `Measured ...` paragraph per config; each `results/runs/<name>/metrics.jsonl` it cites
    is followed by that run's final test accuracy."""
    doc = config.read_text().split('"""')[1]
    lines = [ln for ln in doc.split("\n\n") if ln.strip().startswith("Measured")]
    assert len(lines) == 1, f"{config.name}: one 'Measured' paragraph, got {len(lines)}"
    cited = re.findall(r"(results/runs/[\w-]+/metrics\.jsonl)\D+?(0\.\d{4})", lines[0])
    assert cited, f"{config.name}: its Measured paragraph cites no run"
    for path, acc in cited:
        got = _final(REPO / path)["test_accuracy"]
        assert f"{got:.4f}" == acc, f"{config.name}: {acc} but {path} ends at {got:.4f}"
