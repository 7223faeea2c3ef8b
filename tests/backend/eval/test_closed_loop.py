"""`wallwm eval closed-loop` end to end: real sim, real (tiny) checkpoints, every method."""

import json
import math
from pathlib import Path

import pytest

from app.cli import main
from backend.eval.closed_loop import episode_specs, expert_plan
from backend.model.checkpoint import read_config
from backend.model.presets import ModelConfig
from robot.sim.env import SimEnv


def _run(out: Path, *args: str) -> list[dict]:
    rc = main(["eval", "closed-loop", "--out", str(out), "--no-progress", *args])
    assert rc == 0
    scope = args[args.index("--suite" if "--suite" in args else "--task") + 1]
    method = args[args.index("--method") + 1]
    lines = (out / "closed_loop" / f"{scope}-{method}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_episodes_are_the_first_test_seeds_spread_over_the_suite() -> None:
    specs = episode_specs("reasoning", None, 5)
    assert specs == [
        ("press_buttons_in_order", 4),
        ("sort_by_colour", 4),
        ("press_buttons_in_order", 9),
        ("sort_by_colour", 9),
        ("press_buttons_in_order", 14),
    ]
    assert episode_specs(None, "peg_insertion", 2) == [("peg_insertion", 4), ("peg_insertion", 9)]


def test_expert_plan_covers_the_expert_run_in_pieces_of_h_max() -> None:
    env = SimEnv("stack_blocks")
    try:
        plan = expert_plan(env, 4, "action", h_max=8)
    finally:
        env.close()
    assert plan.score == 10 and sum(p.steps for p in plan.plan) == plan.steps
    assert all(1 <= p.steps <= 8 for p in plan.plan)
    # each event's pieces carry its caption on the asked track
    assert [p.text for p in plan.plan] == [
        e.action for e in plan.events for _ in range(math.ceil(e.length / 8))
    ]


def test_expert_scores_100_and_hold_scores_low(tmp_path: Path, capsys) -> None:
    expert = _run(tmp_path, "--task", "pick_place_bin", "--episodes", "2", "--method", "expert")
    hold = _run(tmp_path, "--task", "pick_place_bin", "--episodes", "2", "--method", "hold")
    assert [r["seed"] for r in expert] == [4, 9] and all(r["split"] == "test" for r in expert)
    assert all(r["task_progress"] == 100 and r["success"] for r in expert)
    assert all(r["steps"] <= r["expert_steps"] for r in expert)
    assert expert[0]["stages"][-1] == "release it in the bin" and expert[0]["events"]
    for r in hold:
        assert r["task_progress"] < 20 and not r["success"]
        assert r["threads"] is None  # no model, nothing to round
        assert r["steps"] == r["step_limit"] == math.ceil(1.5 * r["expert_steps"])
    table = json.loads((tmp_path / "eval.json").read_text())["closed_loop_tasks"]["pick_place_bin"]
    assert table["expert"]["task_progress"] == 100 and table["expert"]["ci95"] == [100, 100]
    assert table["hold"]["task_progress"] < 20 and table["hold"]["episodes"] == 2
    assert "pick_place_bin" in capsys.readouterr().out


@pytest.mark.slow
def test_model_methods_run_and_build_one_table(trained, tmp_path: Path) -> None:
    event = _run(
        tmp_path,
        "--suite",
        "diverse",
        "--episodes",
        "1",
        "--method",
        "event",
        "--checkpoint",
        str(trained.event),
        "--steps",
        "1",
    )
    (r,) = event
    assert (
        r["task"] == "pick_place_bin" and r["seed"] == 4 and r["checkpoint"] == str(trained.event)
    )
    assert r["threads"] == 1  # --threads' default
    # Event mode follows the expert's plan on the checkpoint's caption track, one chunk per event.
    config = read_config(trained.event)
    h_max = ModelConfig.from_dict(config["model"]).h_max
    env = SimEnv("pick_place_bin")
    try:
        plan = expert_plan(env, 4, config["train"]["caption_track"], h_max)
    finally:
        env.close()
    assert [e["text"] for e in r["events"]] == [p.text for p in plan.plan][: len(r["events"])]
    assert sum(e["steps"] for e in r["events"]) == r["steps"] <= r["step_limit"]
    assert all(1 <= e["steps"] <= e["predicted_steps"] for e in r["events"])

    (u,) = _run(
        tmp_path,
        "--suite",
        "diverse",
        "--episodes",
        "1",
        "--method",
        "unified",
        "--checkpoint",
        str(trained.unified),
        "--steps",
        "1",
        "--max-steps",
        "20",
    )
    assert u["steps"] == 20 and [e["steps"] for e in u["events"]] == [16, 4]  # fixed chunks of 16
    assert all(isinstance(e["text"], str) for e in u["events"])  # the VLM's proposed next events

    (f,) = _run(
        tmp_path,
        "--suite",
        "diverse",
        "--episodes",
        "1",
        "--method",
        "fixed",
        "--checkpoint",
        str(trained.fixed),
        "--steps",
        "1",
        "--max-steps",
        "20",
    )
    assert [e["steps"] for e in f["events"]] == [16, 4]
    assert all(e["text"] == f["instruction"] for e in f["events"])  # the task instruction only

    table = json.loads((tmp_path / "eval.json").read_text())["closed_loop"]["diverse"]
    assert set(table) == {"event", "unified", "fixed"}
    for entry in table.values():
        assert entry["episodes"] == 1 and 0 <= entry["task_progress"] <= 100
        assert entry["ci95"][0] <= entry["task_progress"] <= entry["ci95"][1]


@pytest.mark.slow
def test_checkpoint_must_fit_the_method(trained, tmp_path: Path, capsys) -> None:
    base = [
        "eval",
        "closed-loop",
        "--task",
        "pick_place_bin",
        "--episodes",
        "1",
        "--out",
        str(tmp_path),
    ]
    cases = [
        (
            ["--method", "fixed", "--checkpoint", str(trained.event)],
            "needs a fixed-recipe checkpoint",
        ),
        (
            ["--method", "event", "--checkpoint", str(trained.fixed)],
            "needs an event-recipe checkpoint",
        ),
        (
            ["--method", "unified", "--checkpoint", str(trained.event)],
            "wallwm train --stage unified",
        ),
        (["--method", "event", "--checkpoint", str(trained.vae)], "VAE-stage checkpoint"),
    ]
    for args, message in cases:
        assert main([*base, *args]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    base = ["eval", "closed-loop", "--episodes", "1", "--out", str(tmp_path)]
    cases = [
        (["--suite", "divers", "--method", "hold"], "did you mean 'diverse'"),
        (["--task", "pick_plce_bin", "--method", "hold"], "did you mean 'pick_place_bin'"),
        (["--task", "pick_place_bin", "--method", "evnt"], "did you mean 'event'"),
        (["--task", "pick_place_bin", "--method", "event"], "needs --checkpoint"),
        (["--task", "pick_place_bin", "--checkpoint", str(tmp_path / "missing")], "does not exist"),
        (
            ["--task", "pick_place_bin", "--method", "hold", "--max-steps", "0"],
            "--max-steps must be >= 1",
        ),
    ]
    for args, message in cases:
        assert main([*base, *args]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert (
        main(
            [
                "eval",
                "closed-loop",
                "--task",
                "pick_place_bin",
                "--episodes",
                "0",
                "--method",
                "hold",
            ]
        )
        == 2
    )
    assert "--episodes must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "eval.json").exists()


def test_data_generate_task_did_you_mean(tmp_path: Path, capsys) -> None:
    assert (
        main(
            [
                "data",
                "generate",
                "--task",
                "pick_plce_bin",
                "--episodes",
                "1",
                "--out",
                str(tmp_path / "d"),
            ]
        )
        == 2
    )
    assert "did you mean 'pick_place_bin'" in capsys.readouterr().err
