"""The studio: a Gradio workbench that imagines, shows and executes plan events (DESIGN §7).

- `session`: what one browser tab owns (plan, observation, imaginations, log), and the plan
  editing rules.
- `pictures`: the video grid (observed | imagined | difference | ground truth) as images.
- `handlers`: the `Studio` and its event handlers, small plain functions and generators.
- `ui`: the layout, and the wiring of handlers to widgets at the bottom.
- `bench`: `wallwm bench studio`, measured in a real browser.
"""
