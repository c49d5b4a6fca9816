"""``--help``: choices as Enums, every option's default, an Examples block; completion; timing-free checks."""

import typing

import click
import pytest
import typer
from typer.testing import CliRunner

from anomaly_ae.cli.choices import ExportFormat, ModelName, PixelMethod, ThresholdMethod
from anomaly_ae.cli.main import app

runner = CliRunner()
COMMANDS = [["train"], ["score"], ["evaluate"], ["calibrate"], ["sample"], ["export"], ["export-encoder"],
            ["segment", "train"], ["segment", "predict"]]


def _command(path: list[str]) -> click.Command:
    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    return cmd


def _options(path: list[str]) -> list[click.Option]:
    return [p for p in _command(path).params if isinstance(p, click.Option) and p.name != "help"]


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_option_shows_its_default(path):
    for opt in _options(path):
        if opt.required:
            continue
        if opt.is_flag and not opt.secondary_opts and opt.default is False:
            continue  # a switch such as --no-track or --json is off unless given
        assert opt.show_default is not False, f"{path} {opt.opts}"
        assert opt.default is not None or isinstance(opt.show_default, str), (
            f"{path} {opt.opts}: a default of None must say what it means (show_default='...')")


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_help_ends_with_examples_of_the_command(path):
    res = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    examples = res.stdout.split("Examples:", 1)[1]
    assert f"anomaly-ae {' '.join(path)} " in examples


@pytest.mark.parametrize(("path", "option", "choices"), [
    (["train"], "--model", ModelName), (["calibrate"], "--method", ThresholdMethod),
    (["calibrate"], "--pixel-method", PixelMethod), (["export"], "--format", ExportFormat),
    (["export-encoder"], "--format", ExportFormat)])
def test_choices_are_listed_and_enforced(path, option, choices):
    values = [c.value for c in choices]
    res = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert "|".join(values) in res.stdout.replace("\n", "").replace("│", "").replace(" ", "")
    bad = runner.invoke(app, [*path, "x", option, "transformer"])
    assert bad.exit_code == 2 and "transformer" in bad.output and values[0] in bad.output


def test_choices_match_what_the_library_accepts():
    from anomaly_ae.config import ModelConfig, ThresholdConfig
    from anomaly_ae.deploy.graph import FORMATS

    union = typing.get_args(typing.get_args(ModelConfig)[0])
    names = {typing.get_args(cls.model_fields["name"].annotation)[0] for cls in union}
    assert names == {m.value for m in ModelName}
    assert set(typing.get_args(ThresholdConfig.model_fields["method"].annotation)) == {m.value for m in ThresholdMethod}
    assert set(typing.get_args(ThresholdConfig.model_fields["pixel_method"].annotation)) == {
        m.value for m in PixelMethod}
    assert set(FORMATS) == {f.value for f in ExportFormat}


def test_completion_can_be_installed_and_shown(monkeypatch):
    res = runner.invoke(app, ["--help"])
    assert "--install-completion" in res.stdout and "--show-completion" in res.stdout
    # the shell is named, not detected: detection reads the process tree, which differs run to run (a bare
    # --show-completion is a flag while detection is on, and then "bash" would not be its value)
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    shown = runner.invoke(app, ["--show-completion", "bash"])
    assert shown.exit_code == 0 and "_ANOMALY_AE_COMPLETE" in shown.stdout.upper().replace("-", "_"), shown.output
