"""Learning from rosbags: dataset building (bags -> Parquet episodes) and the Accelerate trainer.

ROS-free: bags are read with `rosbags` and messages deserialized with its typestore, so the
dataset can be built on any machine (a GPU box without ROS included).
"""
