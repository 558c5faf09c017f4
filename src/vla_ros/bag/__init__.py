"""rosbag2 tooling built on `rosbags`: synthesis, replay, recording, invariant checks, reports."""
