"""A minimal vla-eval model server for trying the integration (not a policy worth scoring): it turns toward the
instructed side for three steps, then back, then drives forward.

    python examples/vlaeval/steer_server.py --address 127.0.0.1:8000   # pip install 'mobile-vla-sim[vlaeval]'

A real model server (vla-eval ships several) answers the same messages: images by camera name and the
instruction in, `{"actions": [linear_x, angular_z]}` (or a chunk of them) out.
"""

import numpy as np
from vla_eval.model_servers.predict import PredictModelServer
from vla_eval.model_servers.serve import run_server
from vla_eval.specs import DimSpec


class SteerServer(PredictModelServer):
    def predict(self, obs, ctx):
        side = 1.0 if "left" in obs["task_description"] else -1.0
        turn = side * 0.6 if ctx.step < 3 else -side * 0.6 if ctx.step < 6 else 0.0
        return {"actions": np.array([0.4, turn], np.float32)}

    def get_action_spec(self):
        return {"actions": DimSpec("actions", 2, "diff_velocity")}

    def get_observation_spec(self):
        return {"front": DimSpec("front", 0, "rgb_hwc_uint8")}


if __name__ == "__main__":
    run_server(SteerServer)
