"""Pictures of backend outputs: Rerun recordings (`viewers.rerun`), plotly end-effector paths
(`viewers.trajectories`) and sight-cone geometry, overlap and masks (`viewers.cones`).

Never imports the app or gradio: the same pictures serve the studio, the docs and the tests.
"""
