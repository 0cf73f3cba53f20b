import json
from pathlib import Path

from permlib.experiments.provenance import REPO_ROOT, command_line, provenance


def test_command_line_has_no_machine_paths():
    script = str(REPO_ROOT / "permlib" / "experiments" / "sorting.py")
    assert command_line([script, "--mode", "full"]) == (
        "python -m permlib.experiments.sorting --mode full"
    )
    assert command_line([str(REPO_ROOT / "benchmarks" / "run.py"), "--quick"]) == (
        "python -m benchmarks.run --quick"
    )
    assert command_line(["/elsewhere/tool.py", "a b"]) == "python tool.py 'a b'"


def test_provenance_is_complete_and_serializable():
    info = json.loads(json.dumps(provenance(seed=3, mode="ci")))
    assert info["seed"] == 3 and info["mode"] == "ci"
    assert {"command", "git_commit", "timestamp", "versions", "machine"} <= info.keys()
    assert info["versions"]["torch"].startswith("2.13.0")


def _commands(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "command" and isinstance(value, str):
                yield value
            else:
                yield from _commands(value)
    elif isinstance(node, list):
        for value in node:
            yield from _commands(value)


def test_committed_results_record_relative_commands():
    found = 0
    for path in (REPO_ROOT / "benchmarks" / "results").glob("*.json"):
        for command in _commands(json.loads(path.read_text())):
            found += 1
            assert command.startswith("python -m "), (path.name, command)
            assert not any(Path(tok).is_absolute() for tok in command.split()), command
    assert found > 0
