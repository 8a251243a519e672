"""Rollout video composition and mp4 writing (imageio + ffmpeg) without a simulation."""

from __future__ import annotations

import imageio.v2 as imageio
import numpy as np

from mobile_vla_sim.eval.video import EpisodeVideo, TopDownMap, compose_frame


def test_compose_frame_shape_and_content():
    cam = np.full((48, 48, 3), 200, np.uint8)
    m = TopDownMap([[0, 0], [2, 0], [4, 0]])
    frame = compose_frame(cam, m.draw([[0, 0, 0], [1, 0.3, 0.2]], [[2, 0]], [4, 0]), ["go left", "step 1"])
    assert frame.shape == (256, 384, 3) and frame.dtype == np.uint8
    assert (frame[:192, :192] == 200).all()  # camera panel, upscaled
    assert frame[192:, :].max() > 200  # text drawn on the banner


def test_map_orientation():
    m = TopDownMap([[0, 0], [4, 0], [2, 1], [2, -1]])
    x_fwd, y_fwd = m.px(4, 0)
    x_left, _ = m.px(2, 1)
    assert y_fwd < m.px(0, 0)[1]  # forward is up
    assert x_left < m.px(2, -1)[0]  # left is left


def test_episode_video_frame_count(tmp_path):
    path = tmp_path / "ep.mp4"
    video = EpisodeVideo(path, "Navigate around obstacles and reach the front of the beverage bottle on the left",
                         obstacles=[[2.0, 0.0]], goal=[4.0, 0.0], start=[0.0, 0.0, 0.0])
    rng = np.random.default_rng(0)
    poses = []
    for t in range(7):
        poses.append([0.5 * t, 0.1 * t, 0.0])
        video.add(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8), poses, t, None if t == 0 else [0.3, 0.1],
                  "success" if t == 6 else "")
    assert not path.exists()  # only appears once finished
    video.close()
    reader = imageio.get_reader(path)
    assert reader.count_frames() == 7
    assert reader.get_data(0).shape == (256, 384, 3)
    reader.close()
