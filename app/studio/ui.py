"""The studio's layout; the wiring of handlers to widgets is at the bottom.

Top bar: robot link light, mode, Task Progress with its stages, model latency, E-STOP.
Left: source, task, the event plan editor, imagine controls and the robot buttons.
Centre: the Rerun viewer, and tabs: video grid, 3D trajectories, sight cones, robot log.

Concurrency: the E-STOP bypasses the queue (`queue=False`) in a group of its own, so it never
waits behind model work; telemetry ticks have their own unlimited group; imagination is one
at a time (there is one model); robot commands and execution have their own groups.
"""

from __future__ import annotations

import functools

import gradio as gr
from gradio_rerun import Rerun

from app.studio import demo as demo_mode
from app.studio import sessions_tab, teleop
from app.studio.recording import RecordingStudio
from app.studio.session import SOURCES, new_session

TICK_S = 0.5  # top bar refresh period (telemetry arrives at >= 20 Hz; the page needs less)

CSS = """
#topbar {align-items: center; gap: 10px; padding: 6px 10px; border-radius: 8px;
         background: var(--block-background-fill); border: 1px solid var(--border-color-primary);}
#topbar .link {display: flex; align-items: center; gap: 8px; font-weight: 600; white-space: nowrap;}
#topbar .light {display: inline-block; width: 18px; height: 18px; border-radius: 50%;
                box-shadow: 0 0 4px rgba(0,0,0,.4);}
.progress .ptitle {font-size: 14px; margin-bottom: 3px;}
.progress .bar {height: 14px; background: #e0e0e0; border-radius: 7px; overflow: hidden;}
.progress .fill {height: 100%; background: #2e7d32; transition: width .3s;}
.progress .stages {margin-top: 4px; display: flex; flex-wrap: wrap; gap: 4px;}
.progress .stage {font-size: 11px; padding: 1px 6px; border-radius: 8px; background: #eeeeee; color: #555;}
.progress .stage.done {background: #c8e6c9; color: #1b5e20;}
#estop {background: #c62828 !important; color: white !important; font-size: 22px !important;
        font-weight: 800 !important; min-height: 64px; border: 3px solid #7f0000 !important;
        letter-spacing: 1px;}
#estop:hover {background: #b71c1c !important;}
#status textarea {font-weight: 600;}
.demo-caption {font-size: 20px; font-weight: 700; padding: 8px 12px; border-radius: 8px;
               background: #fff8e1; border: 2px solid #f9a825; color: #3e2723;}
#jog-pad button {min-width: 48px;}
"""


def build_ui(studio: RecordingStudio) -> gr.Blocks:
    """The studio page. Launch with `css=CSS` (Gradio 6 takes styling at launch)."""
    task_choices = [(f"{name} — {desc}", name) for name, desc in studio.tasks.items()]
    info = studio.backend.info()
    default_steps = int(info.get("sampling_steps") or 10)

    with gr.Blocks(title="WALL-WM Studio", analytics_enabled=False, fill_width=True) as demo:
        session = gr.State(new_session)

        # ---------------------------------------------------------------- top bar
        with gr.Row(elem_id="topbar", equal_height=True):
            gr.Markdown("### WALL-WM Studio", min_width=140, scale=0)
            link = gr.HTML(min_width=150)
            mode = gr.Textbox(
                label="Robot mode", interactive=False, min_width=110, scale=1, elem_id="robot-mode"
            )
            progress = gr.HTML(min_width=300)
            latency = gr.Textbox(label="Model latency", interactive=False, min_width=200, scale=2)
            saved = gr.Textbox(label="Session", interactive=False, min_width=220, scale=2)
            reset_fault = gr.Button("Reset fault", size="sm", min_width=90, scale=0)
            estop = gr.Button("E-STOP", elem_id="estop", min_width=150, scale=0)
        status = gr.Textbox(
            label="Status", interactive=False, lines=1, max_lines=3, elem_id="status"
        )
        demo_caption = gr.HTML(elem_id="demo-caption")

        with gr.Row():
            # ------------------------------------------------------------ left column
            with gr.Column(scale=1, min_width=360, elem_id="left"):
                source = gr.Radio(SOURCES, value=SOURCES[0], label="Source")
                with gr.Group(visible=False) as dataset_box:
                    dataset = gr.Textbox(label="Dataset path", value=studio.dataset)
                    with gr.Row():
                        episode = gr.Number(label="Episode", value=0, precision=0, minimum=0)
                        frame = gr.Number(label="Frame", value=0, precision=0, minimum=0)
                    load_frame = gr.Button("Load frame", size="sm")
                with gr.Row(equal_height=True):
                    task = gr.Dropdown(task_choices, label="Task", scale=3, min_width=160)
                    task_seed = gr.Number(
                        label="Task seed", value=0, precision=0, minimum=0, scale=1, min_width=70
                    )
                    reset_scene = gr.Button("Reset scene", size="sm", scale=1, min_width=80)

                plan = gr.Radio([], label="Event plan", elem_id="plan")
                event_text = gr.Textbox(
                    label="Event text", lines=1, max_lines=3, placeholder="e.g. grasp the red block"
                )
                with gr.Row():
                    add = gr.Button("Add event", size="sm", min_width=60)
                    save = gr.Button("Save edit", size="sm", min_width=60)
                    delete = gr.Button("Delete event", size="sm", min_width=60)
                    up = gr.Button("Move up", size="sm", min_width=60)
                    down = gr.Button("Move down", size="sm", min_width=60)

                with gr.Row(equal_height=True):
                    imagine_mode = gr.Radio(
                        ["event", "unified"], value="event", label="Mode", scale=2, min_width=120
                    )
                    imagine_seed = gr.Number(
                        label="Imagination seed",
                        value=0,
                        precision=0,
                        minimum=0,
                        scale=1,
                        min_width=80,
                    )
                    steps = gr.Number(
                        label="Denoising steps",
                        value=default_steps,
                        precision=0,
                        minimum=1,
                        maximum=100,
                        scale=1,
                        min_width=80,
                    )
                with gr.Row():
                    imagine = gr.Button("Imagine", variant="primary")
                    approve = gr.Button("Approve & send", variant="primary")
                with gr.Row():
                    pause = gr.Button("Pause", size="sm", min_width=60)
                    resume = gr.Button("Resume", size="sm", min_width=60)
                    stop = gr.Button("Stop", size="sm", min_width=60)
                    take_over = gr.Button("Take over", size="sm", min_width=60)
                with gr.Row():
                    run_plan = gr.Button("Run plan", size="sm", min_width=60)
                    replace_chunk = gr.Button("Replace running chunk", size="sm", min_width=60)
                with gr.Group(visible=False, elem_id="jog-pad") as jog_pad:
                    gr.Markdown(
                        "**Jog** (keys: arrows ±x ±y, PageUp/PageDown ±z, q/e yaw, c/o gripper)"
                    )
                    jog_buttons = {}
                    for row in (
                        ("+x", "-x", "+y", "-y"),
                        ("+z", "-z", "yaw+", "yaw-"),
                        ("close", "open"),
                    ):
                        with gr.Row():
                            for name in row:
                                jog_buttons[name] = gr.Button(
                                    name, size="sm", elem_id=f"jog-{name}"
                                )
                    with gr.Row(equal_height=True):
                        hand_back_at = gr.Number(
                            label="Hand back at event", value=1, precision=0, minimum=1
                        )
                        hand_back = gr.Button("Hand back", size="sm")
                with gr.Row():
                    demo_button = gr.Button("Demo", size="sm", min_width=60)
                    stop_demo = gr.Button("Stop demo", size="sm", min_width=60)

                with gr.Accordion("Task instruction and VLM proposal", open=False):
                    task_text = gr.Textbox(label="Task instruction", lines=1)
                    propose = gr.Button("Propose plan", size="sm")
                with gr.Accordion("Plan as text", open=False):
                    plan_text = gr.Textbox(label="Plan (one event per line)", lines=6)
                    replace_plan = gr.Button("Replace plan", size="sm")

            # ------------------------------------------------------------ centre
            with gr.Column(scale=3):
                viewer = Rerun(
                    label="Rerun viewer",
                    streaming=True,
                    height=620,
                    panel_states={
                        "top": "collapsed",
                        "blueprint": "hidden",
                        "selection": "hidden",
                        "time": "collapsed",
                    },
                )
                with gr.Tabs():
                    with gr.Tab("Video grid"):
                        grid = gr.Image(label="Video grid", interactive=False, show_label=True)
                        grid_caption = gr.Markdown()
                    with gr.Tab("3D trajectories"):
                        trajectories = gr.Plot(label="End-effector paths")
                    with gr.Tab("Sight cones"):
                        with gr.Row():
                            cones = gr.Plot(label="Sight cones")
                            overlap = gr.Plot(label="View overlap")
                        token_mask = gr.Plot(label="Token mask")
                    with gr.Tab("Robot log"):
                        robot_log = gr.Textbox(
                            label="Robot log", lines=18, max_lines=18, interactive=False
                        )
                    with gr.Tab("Sessions"):
                        sessions = sessions_tab.build()

        # Started once the page has loaded: Gradio creates a tab's `gr.State` on first use without
        # a lock, so a tick racing the load could leave the tab with a second, empty Session.
        timer = gr.Timer(TICK_S, active=False)

        # ================================================================ wiring
        scene_out = [
            viewer,
            plan,
            event_text,
            plan_text,
            task,
            task_seed,
            task_text,
            status,
            trajectories,
            cones,
            overlap,
            token_mask,
        ]
        plan_out = [plan, event_text, plan_text, status]

        loaded = demo.load(studio.on_load, [session], [*scene_out, session])
        loaded.then(lambda: gr.Timer(active=True), None, [timer], queue=False)
        timer.tick(
            studio.tick,
            [session],
            [link, mode, progress, latency, robot_log, saved],
            queue=False,
            show_progress="hidden",
            concurrency_id="telemetry",
            concurrency_limit=None,
        )
        estop.click(
            studio.estop,
            None,
            [status],
            queue=False,
            show_progress="hidden",
            concurrency_id="estop",
            concurrency_limit=None,
        )
        reset_fault.click(
            studio.reset_fault, [session], [status], concurrency_id="robot", concurrency_limit=None
        )

        source.input(
            lambda s: gr.Group(visible=s == SOURCES[1]), [source], [dataset_box], queue=False
        )
        source.input(studio.choose_source, [session, source], scene_out)
        load_frame.click(studio.load_dataset, [session, dataset, episode, frame], scene_out)
        reset_scene.click(
            studio.pick_task, [session, task, task_seed], scene_out, concurrency_id="robot"
        )

        plan.input(studio.select_event, [session, plan], plan_out, queue=False)
        add.click(studio.add_event, [session, event_text], plan_out, queue=False)
        save.click(studio.save_event, [session, event_text], plan_out, queue=False)
        delete.click(studio.delete_event, [session], plan_out, queue=False)
        up.click(lambda s: studio.move_event(s, -1), [session], plan_out, queue=False)
        down.click(lambda s: studio.move_event(s, +1), [session], plan_out, queue=False)
        replace_plan.click(studio.replace_plan, [session, plan_text], plan_out, queue=False)
        propose.click(studio.propose, [session, task_text], plan_out, concurrency_id="model")

        imagining = imagine.click(
            studio.imagine,
            [session, imagine_mode, imagine_seed, steps],
            [viewer, status, grid, grid_caption, trajectories, plan],
            concurrency_id="model",
            show_progress="minimal",
            show_progress_on=[status],
        )
        approve.click(
            studio.approve,
            [session],
            [viewer, status, trajectories, plan, mode],
            concurrency_id="execute",
            concurrency_limit=None,
            show_progress="minimal",
            show_progress_on=[status],
        )
        run_out = [viewer, status, grid, grid_caption, trajectories, plan, mode]
        imagine_in = [session, imagine_mode, imagine_seed, steps]
        running = run_plan.click(
            functools.partial(teleop.run_plan, studio),
            imagine_in,
            run_out,
            concurrency_id="execute",
            concurrency_limit=None,
            show_progress="minimal",
            show_progress_on=[status],
        )
        pause.click(
            functools.partial(teleop.pause, studio),
            [session],
            [status],
            concurrency_id="robot",
            concurrency_limit=None,
        )
        resume.click(
            functools.partial(teleop.resume, studio),
            imagine_in,
            run_out,
            concurrency_id="execute",
            concurrency_limit=None,
            show_progress="minimal",
            show_progress_on=[status],
        )
        replace_chunk.click(
            functools.partial(teleop.replace_chunk, studio),
            [session],
            [status],
            concurrency_id="robot",
            concurrency_limit=None,
        )
        stop.click(
            studio.stop,
            [session],
            [status],
            cancels=[imagining],
            concurrency_id="robot",
            concurrency_limit=None,
        )
        take_over.click(
            functools.partial(teleop.take_over, studio),
            [session],
            [status, jog_pad],
            cancels=[running],
            concurrency_id="robot",
            concurrency_limit=None,
        )
        for name, button in jog_buttons.items():
            button.click(
                functools.partial(teleop.jog, studio, name=name),
                [session],
                [status],
                concurrency_id="jog",
                show_progress="hidden",
            )
        hand_back.click(
            functools.partial(teleop.hand_back, studio),
            [session, hand_back_at],
            [status, jog_pad, plan],
            concurrency_id="robot",
            concurrency_limit=None,
        )
        demo.load(None, js=teleop.KEYBOARD_JS)

        demo_out = [*scene_out, grid, grid_caption, mode, demo_caption]
        demo_run = functools.partial(demo_mode.demo, studio)
        demo_button.click(
            demo_run, [session], demo_out, concurrency_id="execute", concurrency_limit=None
        )
        if studio.autodemo:
            loaded.then(
                demo_run, [session], demo_out, concurrency_id="execute", concurrency_limit=None
            )
        stop_demo.click(
            functools.partial(demo_mode.stop_demo, studio),
            [session],
            [status, demo_caption],
            queue=False,
        )
        sessions_tab.wire(studio, sessions, viewer)
    studio.blocks = demo  # for Studio.prune_streams
    return demo
