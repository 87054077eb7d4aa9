"""The README's two set-up commands are the ones CI and users run."""
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]


def commands():
    lines = ROOT.joinpath("README.md").read_text().splitlines()
    block = lines[lines.index("```bash") + 1: lines.index("```")]
    return [line for line in block if not line.startswith("#")]


def test_readme_opens_with_the_two_commands():
    train, test = commands()
    assert train.endswith("pip install -q . && mlp train")
    assert "pip install -q torch==2.13.0 -e '.[all,test]'" in test and test.endswith("python -m pytest -q")


def test_ci_runs_the_readmes_test_command():
    script = ROOT / ".ci" / "run"
    out = subprocess.run(["bash", "-c", 'grep -m1 -A1 "^# Run the tests" README.md | tail -n1'],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    assert out == commands()[1]
    assert 'bash -c "$TEST_COMMAND"' in script.read_text()
