"""Every `run_cml.py` command the README shows, run at tiny scale (tiny encoder, a few examples,
one order, one epoch), so that no documented command can break unnoticed. FewRel's commands
read a small FewRel-format directory in place of the full data; a command that resumes a
committed full-scale run is checked as far as a resume goes before its cells (its config loads
and matches the run directory)."""

import re
import shlex
import shutil
from pathlib import Path

import pytest

from cml.cli import config_from_args, main, parser
from cml.runner import prepare_run_dir
from tests.test_data import write_fewrel

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    *("--encoder", "tiny", "--freeze-layers", "1", "--max-per-relation", "4", "--orders", "1"),
    *("--epochs", "1", "--consolidate-epochs", "1", "--search-steps", "2", "--cpus-per-cell", "1"),
    *("--plots", "none"),  # about a second a run; tests/test_engine.py draws them
]


def readme_commands() -> list[str]:
    """The README's run_cml.py commands, in the order it shows them: lines of its bash blocks
    (continuations joined, comments dropped) and inline code spans; `...` placeholders are not commands."""
    text = (ROOT / "README.md").read_text()
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            found.append(line.split(" # ")[0])
    prose = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    found += re.findall(r"`([^`]*python run_cml\.py[^`]*)`", prose)
    commands = []
    for line in found:
        line = " ".join(line.split())
        if "python run_cml.py" in line and "..." not in line:
            commands.append(line[line.index("python run_cml.py") :])
    return list(dict.fromkeys(commands))


def test_the_readme_shows_the_commands_this_test_runs():
    commands = readme_commands()
    assert "python run_cml.py --dataset fewrel --orders 5" in commands
    assert any("--config configs/demo.yaml" in c for c in commands)
    assert len(commands) >= 8


@pytest.fixture(scope="module")
def small_fewrel(tmp_path_factory):
    """FewRel's pre-split format, 20 relations in 10 tasks of 2 with 5 orders."""
    import json

    root = tmp_path_factory.mktemp("fewrel")
    for split, n in (("train", 6), ("val", 3), ("test", 3)):
        write_fewrel(root / f"{split}.json", n_relations=20, n_per=n)
    relations = [f"P{r}" for r in range(20)]
    orders = [[relations[(2 * k + i) % 20 : (2 * k + i) % 20 + 2] for k in range(10)] for i in range(5)]
    (root / "task_orders.json").write_text(json.dumps(orders))
    return root


@pytest.fixture
def ray_for(local_ray):
    """Ray for a command with `--executor ray`: the test process's shared one (tests/conftest.py),
    except for the demo's command, which starts its own as a user's first run does."""
    import ray

    def connect(command: str) -> None:
        if "configs/demo.yaml" in command:
            ray.shutdown()
        else:
            local_ray()

    return connect


@pytest.mark.parametrize("command", readme_commands())
def test_a_readme_command_runs_at_tiny_scale(command, small_fewrel, tmp_path, monkeypatch, capsys, request):
    monkeypatch.chdir(ROOT)
    if "--executor ray" in command:
        request.getfixturevalue("ray_for")(command)
    monkeypatch.setenv("CML_DATA_DIR", str(small_fewrel))
    monkeypatch.setenv("CML_CACHE_DIR", str(tmp_path / "cache"))
    _shell, _, rest = command.partition("python run_cml.py")
    argv = [
        str(small_fewrel) if a == "../shared/data/fewrel" else re.sub(r"^runs/", f"{tmp_path}/runs/", a)
        for a in shlex.split(rest)
    ]
    if "--resume" in argv:
        committed = ROOT / "results" / Path(argv[argv.index("--resume") + 1]).name
        shutil.copytree(committed, tmp_path / "runs" / committed.name)
        config, _ = config_from_args(parser().parse_args(argv))
        prepare_run_dir(config, resume=True)  # its config still loads and matches the run directory
        return
    if argv[:1] == ["report"]:  # its inputs: the README's full-FewRel command, one run per method named
        runs = [a for a in argv[1 : argv.index("--output")]]
        for run_dir in runs:
            method = Path(run_dir).name.split("-")[-1]
            made = ["--config", "configs/fewrel.yaml", "--method", method, "--output", run_dir, *TINY]
            assert main(made) == 0
        assert main(argv) == 0, command
        assert "final whole accuracy" in capsys.readouterr().out
        return
    if argv == ["--help"]:
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0 and "--dataset" in capsys.readouterr().out
        return
    if "--output" not in argv:
        argv += ["--output", str(tmp_path / "runs" / "default")]
    if "--head" in argv:  # the genotype a search command before it writes
        assert (
            main(["--dataset", "demo", "--search-head", *TINY, "--output", str(tmp_path / "runs/fewrel-search")]) == 0
        )
    assert main([*argv, *TINY, "--mlflow-uri", (tmp_path / "mlruns").as_uri()]) == 0, command
    out = capsys.readouterr().out
    assert ("genotype: " if "--search-head" in argv else "final whole accuracy") in out
