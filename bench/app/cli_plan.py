"""``bench plan``: the command's options; the work is in `bench.app.plan_view`, imported when the command runs."""

from __future__ import annotations

import click


@click.command("plan")
@click.argument("model_name")
@click.option("--technique", default=None, help="a technique (`bench list techniques`): fp32 or int8")
@click.option("--board", "board_name", default="nucleo-f746zg", show_default=True)
@click.option("--task", default="digits-drift", show_default=True,
              help="the task of a built-in model, or of --budget on a .tflite without --profile (a name or a file)")
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--profile", "profile_spec", default=None, help="take last_k and [sparse] from this profile")
@click.option("--last-k", default=None, type=int, help="layers with parameters for last-/bias- (default 1)")
@click.option("--sparse", "sparse_text", default=None,
              help="the [sparse] table inline, e.g. 'bias_k = 2, layers = { 0 = 0.25, 4 = 1 }', or a TOML file "
                   "holding a [sparse] table")
@click.option("--budget", default=None, help="search a sparse scheme within this memory, e.g. 64KB")
@click.option("--steps", default=None, type=click.IntRange(1), help="--budget: SGD steps per trial (default 300; "
              "a .tflite: 100)")
@click.option("--lr", default=None, type=click.FloatRange(0, min_open=True),
              help="--budget: learning rate of the trials (default 0.02; a .tflite: its profile's int8 lr)")
@click.option("--repeats", default=None, type=click.IntRange(1), help="--budget: sample orders averaged per trial "
              "(default 3; a .tflite: 1)")
@click.option("--depth", default=6, show_default=True, type=click.IntRange(1),
              help="--budget on a .tflite: candidate ops with a bias, counted from the end (the classifier included)")
@click.option("--budget-of", type=click.Choice(["sram", "arena"]), default="sram", show_default=True,
              help="--budget: required SRAM on the board (static + arena + stack; needs its built twin image) or the "
                   "planned arena alone")
@click.option("--json", "as_json", is_flag=True, help="print the plan's figures (or the schemes) as JSON on stdout")
def plan_cmd(model_name: str, technique: str | None, board_name: str, task: str, seed: int,
             profile_spec: str | None, last_k: int | None, sparse_text: str | None, budget: str | None,
             steps: int | None, lr: float | None, repeats: int | None, depth: int, budget_of: str,
             as_json: bool) -> None:
    """Print the training plan of MODEL (a name from bench/model/zoo.py) for a technique on a board, or with --budget
    search the sparse-update scheme with the best expected accuracy gain within that memory (MCUNetV3).

    MODEL may be a .tflite file: an int8 technique prints the training plan the device would load (the profile's
    head_classes applied) and its fit; an fp32 one the training memory that graph would need (bench.plan.fp32mem);
    --budget runs the contribution trials in int8 on --task (or the task, head_classes and loss of --profile) and
    searches the scheme (exhaustive, or evolutionary when the schemes are too many). All planned."""
    from bench.app.plan_view import show_plan

    show_plan(model_name, technique, board_name, task, seed, profile_spec, last_k, sparse_text, budget, steps, lr,
              repeats, budget_of, as_json, depth)
