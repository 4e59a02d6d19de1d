"""The README: its Python API example runs, and its first two commands are the documented ones."""

import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def test_python_api_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert blocks, "README has no Python example"
    exec(compile(blocks[0], "README.md", "exec"), {})


def test_readme_starts_with_the_two_commands_and_ci_runs_the_second():
    first = re.search(r"```bash\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert len(first) == 2
    assert "scripts/train.py --config configs/digits_cnn.py --devices all" in first[0]
    assert "pytest" in first[1]
    test_command = first[1].split("&&")[-1].strip()
    assert test_command in (REPO / ".ci" / "run").read_text()


def test_readme_has_no_unfilled_placeholders():
    assert not re.findall(r"\{\{\w+\}\}", README), "README has unfilled {{...}} placeholders"


def test_every_test_the_fault_table_names_exists():
    table = README.split("## Faults:", 1)[1].split("\n## ", 1)[0]
    named = 0
    for cell in re.findall(r"^\|.*\| (`test_.*)\|$", table, re.M):
        file = None
        for ref in re.findall(r"`([^`]+)`", cell):
            path, sep, name = ref.partition("::")  # `file::test`, `::test` (same file), `file`
            file = path or file
            if sep:
                source = (REPO / "tests" / file).read_text()
                assert re.search(rf"^def {re.escape(name)}\(", source, re.M), ref
                named += 1
    assert named >= 20
