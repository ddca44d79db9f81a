"""README.md stays true: its quickstart runs, its commands parse, CI runs its test command."""
import re
import shlex
from pathlib import Path

from jaxnets.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_quickstart_runs(capsys):
    (quickstart,) = code_blocks("python")
    exec(compile(quickstart, "README quickstart", "exec"), {})
    out = capsys.readouterr().out
    accuracy = float(re.search(r"test accuracy ([0-9.]+)", out).group(1))
    assert accuracy > 0.9
    assert "compiled 1 time(s)" in out


def test_ci_runs_exactly_the_readme_test_command():
    main_job, tests = code_blocks("bash")[:2]
    test_command = tests.strip().split("&&")[-1].strip()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.strip().startswith("#")]
    assert ci_lines[-1] == test_command
    assert 'pip install -e ".[dev]"' in tests and '-e ".[dev]"' in " ".join(ci_lines)


def test_main_job_is_the_optimizer_comparison_and_runs_its_parser():
    main_job = code_blocks("bash")[0].strip().split("&&")[-1].strip()
    assert main_job == "python -m experiments.optimizer_comparison"
    import experiments.optimizer_comparison as job
    assert job.main(["--seeds", "1"]) == 2  # its argument checks answer before any work starts


def test_cli_examples_parse():
    blocks = code_blocks("bash")
    commands = []
    cli_block = blocks[2].replace("\\\n", " ")
    commands += [line.split("#")[0].strip() for line in cli_block.splitlines() if line.strip()]
    parser = build_parser()
    for command in commands:
        argv = shlex.split(command)
        assert argv[0] == "jaxnets"
        parser.parse_args(argv[1:])
